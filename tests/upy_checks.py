# What the suites that run unchanged on CPython and on the MicroPython unix port
# (tests/protocol/upy_suite.py, tests/protocol/upy_downlink_suite.py,
# tests/firmware/upy_downlink_suite.py) share: checks that print "FAIL <name>",
# the vectors' JSON form of bytes and maps, and the closing "failures N" line.
#
# The suites run from the repository root with "." first on sys.path, on the
# 64-bit and the 32-bit port alike, so "from tests.upy_checks import ..." finds this
# file on both. MicroPython code: no typing, dataclasses or f-strings.

import sys
from binascii import hexlify, unhexlify

from protocol.errors import FrameError

failures = []


def hx(data):
    """Bytes as lower-case hex text."""
    return hexlify(bytes(data)).decode()


def check(name, cond):
    """Count and print a failed check; a passing one prints nothing."""
    if not cond:
        failures.append(name)
        print("FAIL " + name)


def reason_of(fn, *args):
    """The FrameError reason of fn(*args), or None when it raises none."""
    try:
        fn(*args)
    except FrameError as err:
        return err.reason
    return None


def from_json(value):
    """A vectors file's value with bytes and maps back (JSON has neither: they are
    written as {"bytes": hex} and {"map": [[key, value], ...]})."""
    if isinstance(value, dict):
        if "bytes" in value:
            return unhexlify(value["bytes"])
        result = {}
        for key, item in value["map"]:
            result[key] = from_json(item)
        return result
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def finish():
    """Print the failure count; exit 1 if there was any."""
    print("failures", len(failures))
    if failures:
        sys.exit(1)

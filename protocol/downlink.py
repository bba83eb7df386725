# Downlink frames: commands from the gateway to one node (docs/protocol.md
# section 12). The same shape as an uplink frame, told apart by its control
# byte and by the direction byte of its nonce:
#
#   offset  size  field
#   0       1     control: 0x60 = version 1 | long tag | kind 0 ("downlink")
#   1       4     device id, unsigned big-endian
#   5       3     downlink counter, unsigned big-endian (0 .. 16,777,215)
#   8       n     payload: CBOR array of 1..4 commands, AES-128-CCM encrypted
#   8+n     8     CCM tag (always 8 bytes on a downlink)
#
# The nonce is 0x01 (direction: downlink) | device id | counter (4) | 4 zero
# bytes: it can never equal an uplink nonce, so the downlink counter has its
# own space and may take any value an uplink counter also takes.
#
# A command is a CBOR array [command id, op, arguments...]; the node echoes
# the command id in its report with the result.
#
# This module is what a node needs to check a downlink, kept small because a
# node loads it into a nearly full heap: the payload is read by commands(), a
# decoder of just the CBOR the commands use (integers, byte strings, arrays,
# maps with unsigned keys), not by protocol.cbor_decode. The sending side
# (encode, decode for tools, the command builders, bundles, report parsing,
# sizes) is protocol.downlink_send, offered here on first use of its names.

import struct

from . import ccm
from .errors import FrameError

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):
        return x

# Every number below is a const with a leading underscore: compiled in, never
# a name in a node's RAM (60 public names would cost it about 4 KB). The
# public names, for the gateway, the tools and the docs, are
# protocol.downlink_send's (downlink.CONTROL, downlink.OP_CLOCK, ...), and
# tests/protocol/test_downlink.py checks that each equals its twin here.
_CONTROL = const(0x60)
_HEADER_LEN = const(8)
_TAG_LEN = const(8)
_DIR_DOWNLINK = const(1)
_MIN_DOWNLINK = const(17)   # header + the smallest payload (1 byte) + tag
_MAX_DOWNLINK = const(222)  # EU868's largest payload (SF7, SF8 at 125 kHz)
_MAX_COMMANDS = const(4)
_MAX_CMD_ID = const(0xFFFF)
_MAX_ITEMS = const(16)      # elements of one array or map in a downlink
_CMD_RANGE = const(3)       # results of config_check (see downlink_send.RESULTS)
_CMD_KEY = const(4)

# Frame-level reasons (the node drops the whole downlink and counts the
# reason) are written out where they are raised: a module-level name for each
# would be one more interned string for good on a node (docs/firmware.md,
# "Memory"). Their public names ("dl_short", ...) are protocol.downlink_send's.

# Config whitelist: (code, section, key, lowest, highest). Codes are 1..15 so
# that a rejected code fits the detail nibble of a report entry.
CONFIG_KEYS = (
    (1, "water", "sends_per_day", 1, 24),       # and must divide 24
    (2, "water", "profile_len", 1, 24),         # and >= 24 / sends_per_day (node)
    (3, "water", "burst_lph", 100, 0xFFFFFF),
    (4, "water", "leak_hours", 1, 24),
    (5, "water", "dry_days", 1, 365),
    (6, "water", "backflow_l", 1, 100000),
    (7, "water", "low_battery_mv", 2000, 4200),
    (8, "air", "interval_s", 60, 86400),
    (9, "air", "warmup_s", 0, 600),
    (10, "air", "sample_s", 1, 3600),
    (11, "radio", "sf", 7, 12),
    (12, "radio", "power_dbm", 2, 14),          # EU868 g/g1 sub-bands: 14 dBm (25 mW) ERP
    (13, "radio", "freq_hz", 868100000, 868500000),   # 868.1, 868.3 or 868.5 MHz
    (14, "radio", "bw_hz", 125000, 250000),     # 125 or 250 kHz
)


def nonce(device_id, dcnt):
    """The 13-byte CCM nonce of a downlink: direction byte 0x01."""
    return struct.pack(">BIIxxxx", _DIR_DOWNLINK, device_id, dcnt)


def parse_header(buf):
    """(device_id, dcnt) of a downlink, checking length and control byte (no key needed)."""
    n = len(buf)
    if n > _MAX_DOWNLINK:
        raise FrameError("dl_long", str(n))
    if n < _MIN_DOWNLINK:
        raise FrameError("dl_short", str(n))
    if buf[0] != _CONTROL:
        raise FrameError("dl_format", "control 0x%02x" % buf[0])
    device_id, hi, lo = struct.unpack_from(">IBH", buf, 1)
    return device_id, (hi << 16) | lo


def open_with(buf, device_id, dcnt, block):
    """The decrypted payload bytes; FrameError(dl_forged) when the tag fails."""
    try:
        return ccm.open_(block, nonce(device_id, dcnt), bytes(buf[:_HEADER_LEN]),
                         bytes(buf[_HEADER_LEN:]), _TAG_LEN)
    except FrameError:
        raise FrameError("dl_forged") from None


def commands(plain):
    """The command list of a decrypted payload; FrameError(dl_payload) if it is not one.

    Checks the payload's shape: a CBOR array of 1..4 arrays, each starting
    with a command id (0..65535) and an op (0..255). Arguments are checked by
    the node per command, and reported.
    """
    value, end = _item(plain, 0, 0)
    if end != len(plain):
        raise FrameError("dl_payload", "bytes after the command list")
    if not isinstance(value, list) or not value or len(value) > _MAX_COMMANDS:
        raise FrameError("dl_payload", "not an array of 1..4 commands")
    for cmd in value:
        if (not isinstance(cmd, list) or len(cmd) < 2 or not _uint(cmd[0], _MAX_CMD_ID)
                or not _uint(cmd[1], 0xFF)):
            raise FrameError("dl_payload", "command is not [id, op, ...]")
    return value


def _uint(value, hi):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= hi


def _item(buf, i, depth):
    # One item of the commands' CBOR (RFC 8949 section 3, the deterministic
    # rules of section 4.2.1): (value, index after it). Integers (major types
    # 0, 1), byte strings (2), arrays (4) and maps with ascending unsigned keys
    # (5), definite lengths in their shortest form, nested at most 3 deep;
    # anything else is dl_payload.
    if i >= len(buf):
        raise FrameError("dl_payload", "truncated")
    major = buf[i] >> 5
    info = buf[i] & 0x1F
    i += 1
    if info < 24:
        arg = info
    elif info < 28:
        n = 1 << (info - 24)
        if i + n > len(buf):
            raise FrameError("dl_payload", "truncated")
        arg = 0
        for pos in range(i, i + n):
            arg = (arg << 8) | buf[pos]
        if arg < (24 if n == 1 else 1 << (4 * n)):
            raise FrameError("dl_payload", "not in shortest form")
        i += n
    else:
        raise FrameError("dl_payload", "indefinite length or reserved")
    if major == 0:
        return arg, i
    if major == 1:
        return -1 - arg, i
    if major == 2:
        if i + arg > len(buf):
            raise FrameError("dl_payload", "truncated")
        return bytes(buf[i:i + arg]), i + arg
    if major not in (4, 5) or depth > 2 or arg > _MAX_ITEMS:
        raise FrameError("dl_payload", "not a command item")
    if major == 4:
        out = []
        for _ in range(arg):
            value, i = _item(buf, i, depth + 1)
            out.append(value)
        return out, i
    table = {}
    last = -1
    for _ in range(arg):
        key, i = _item(buf, i, depth + 1)
        if not isinstance(key, int) or key <= last:
            raise FrameError("dl_payload", "map key not ascending and unsigned")
        table[key], i = _item(buf, i, depth + 1)
        last = key
    return table, i


def config_entry(code):
    """The CONFIG_KEYS row of `code`, or None."""
    for row in CONFIG_KEYS:
        if row[0] == code:
            return row
    return None


def config_check(code, value):
    """0 when `value` is allowed for config `code`, else the result code cmd_key or cmd_range.

    The node adds what depends on it: the code's section must be its role's
    (or radio on a LoRa link), and profile_len >= 24 / sends_per_day.
    """
    row = config_entry(code)
    if row is None:
        return _CMD_KEY
    if not _uint(value, row[4]) or value < row[3]:
        return _CMD_RANGE
    if code == 1 and 24 % value:
        return _CMD_RANGE
    if code == 13 and value not in (868100000, 868300000, 868500000):
        return _CMD_RANGE
    if code == 14 and value not in (125000, 250000):
        return _CMD_RANGE
    return 0


def report_entry(cmd_id, result, detail=0):
    """One report entry: command id, result code (downlink_send.RESULTS), a 0..15 detail."""
    return (cmd_id << 8) | ((detail & 0xF) << 4) | result


def __getattr__(name):
    # The sending side: see the top of this file.
    from . import downlink_send

    value = getattr(downlink_send, name)
    globals()[name] = value
    return value

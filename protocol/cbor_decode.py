# The decoding half of protocol.cbor (see there for the subset and its rules),
# kept apart so that a node, which only encodes, does not carry it.
#
# decode() is total: for any input it returns a value or raises FrameError.

import struct

from .cbor import MAX_DEPTH, MAX_LENGTH
from .errors import (
    CBOR_BAD_TEXT,
    CBOR_INDEFINITE,
    CBOR_MAP_KEY,
    CBOR_NON_SHORTEST,
    CBOR_TOO_DEEP,
    CBOR_TOO_LONG,
    CBOR_TRAILING,
    CBOR_TRUNCATED,
    CBOR_UNSUPPORTED,
    FrameError,
)


def _arg(buf, i, info, end):
    # Reads the argument that follows an initial byte; returns (value, next index).
    if info < 24:
        return info, i
    if info == 24:
        if i + 1 > end:
            raise FrameError(CBOR_TRUNCATED)
        v = buf[i]
        if v < 24:
            raise FrameError(CBOR_NON_SHORTEST)
        return v, i + 1
    if info == 25:
        if i + 2 > end:
            raise FrameError(CBOR_TRUNCATED)
        v = (buf[i] << 8) | buf[i + 1]
        if v < 0x100:
            raise FrameError(CBOR_NON_SHORTEST)
        return v, i + 2
    if info == 26:
        if i + 4 > end:
            raise FrameError(CBOR_TRUNCATED)
        v = struct.unpack_from(">I", buf, i)[0]
        if v < 0x10000:
            raise FrameError(CBOR_NON_SHORTEST)
        return v, i + 4
    if info == 27:
        if i + 8 > end:
            raise FrameError(CBOR_TRUNCATED)
        v = struct.unpack_from(">Q", buf, i)[0]
        if v < 0x100000000:
            raise FrameError(CBOR_NON_SHORTEST)
        return v, i + 8
    if info == 31:
        raise FrameError(CBOR_INDEFINITE)
    raise FrameError(CBOR_UNSUPPORTED, "reserved additional information")


def _utf8_ok(raw):
    # Strict UTF-8 (RFC 3629 section 4; Unicode table 3-7 of well-formed byte
    # sequences): no overlong forms, no surrogates U+D800..U+DFFF, nothing above
    # U+10FFFF. Checked here rather than left to bytes.decode because the unix
    # port's decode accepts all three, and both runtimes must reject the same text.
    n = len(raw)
    i = 0
    while i < n:
        b = raw[i]
        if b < 0x80:
            i += 1
            continue
        lo = 0x80  # bounds of the second byte; later ones are always 80..BF
        hi = 0xBF
        if b < 0xC2:
            return False  # a continuation byte without a lead, or C0/C1 (overlong)
        if b < 0xE0:
            more = 1
        elif b < 0xF0:
            more = 2
            if b == 0xE0:
                lo = 0xA0  # E0 80..9F would be an overlong form
            elif b == 0xED:
                hi = 0x9F  # ED A0..BF would be a surrogate
        elif b < 0xF5:
            more = 3
            if b == 0xF0:
                lo = 0x90  # F0 80..8F would be an overlong form
            elif b == 0xF4:
                hi = 0x8F  # F4 90.. would be above U+10FFFF
        else:
            return False  # F5..FF never appear in UTF-8
        if i + more >= n:
            return False  # the sequence runs past the end of the string
        c = raw[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + 1 + more):
            if raw[j] & 0xC0 != 0x80:
                return False
        i += 1 + more
    return True


def _item(buf, i, end, depth):
    # Decodes one item starting at buf[i]; returns (value, next index).
    if i >= end:
        raise FrameError(CBOR_TRUNCATED)
    ib = buf[i]
    if ib < 24:  # fast paths: the unsigned integers most readings are
        return ib, i + 1
    if ib < 28:
        return _arg(buf, i + 1, ib, end)
    major = ib >> 5
    info = ib & 0x1F
    i += 1
    if major == 7:
        if ib == 0xF6:
            return None, i
        if ib == 0xF5:
            return True, i
        if ib == 0xF4:
            return False, i
        if ib == 0xFF:
            raise FrameError(CBOR_INDEFINITE, "break outside an indefinite item")
        raise FrameError(CBOR_UNSUPPORTED, "float or simple value")
    if major == 6:
        raise FrameError(CBOR_UNSUPPORTED, "tag")
    arg, i = _arg(buf, i, info, end)
    if major == 0:
        return arg, i
    if major == 1:
        return -1 - arg, i
    if arg > MAX_LENGTH:
        raise FrameError(CBOR_TOO_LONG)
    if major == 2 or major == 3:
        if i + arg > end:
            raise FrameError(CBOR_TRUNCATED)
        raw = bytes(buf[i:i + arg])
        i += arg
        if major == 2:
            return raw, i
        if not _utf8_ok(raw):
            raise FrameError(CBOR_BAD_TEXT)
        return raw.decode("utf-8"), i
    if depth >= MAX_DEPTH:
        raise FrameError(CBOR_TOO_DEEP)
    # Every item takes at least one byte: a count past the end is truncation.
    if i + arg > end:
        raise FrameError(CBOR_TRUNCATED)
    if major == 4:
        items = []
        depth += 1
        for _ in range(arg):
            # Inline fast paths for the small integers readings are made of; anything
            # else (and every error) goes through _item.
            b = buf[i] if i < end else 0xFF
            if b < 24:
                items.append(b)
                i += 1
            elif b == 24 and i + 2 <= end and buf[i + 1] >= 24:
                items.append(buf[i + 1])
                i += 2
            elif b == 25 and i + 3 <= end and buf[i + 1]:
                items.append((buf[i + 1] << 8) | buf[i + 2])
                i += 3
            elif 0x20 <= b < 0x38:
                items.append(0x1F - b)
                i += 1
            else:
                value, i = _item(buf, i, end, depth)
                items.append(value)
        return items, i
    # major == 5: a map with unsigned integer keys in strictly ascending order
    result = {}
    last = -1
    for _ in range(arg):
        if i >= end:
            raise FrameError(CBOR_TRUNCATED)
        if buf[i] >> 5 != 0:
            raise FrameError(CBOR_MAP_KEY, "key is not an unsigned integer")
        key, i = _arg(buf, i + 1, buf[i] & 0x1F, end)
        if key <= last:
            raise FrameError(CBOR_MAP_KEY, "keys unsorted or duplicated")
        last = key
        value, i = _item(buf, i, end, depth + 1)
        result[key] = value
    return result, i


def decode(buf):
    """The single CBOR item that fills `buf` exactly; FrameError otherwise."""
    value, i = _item(buf, 0, len(buf), 0)
    if i != len(buf):
        raise FrameError(CBOR_TRAILING)
    return value


def decode_prefix(buf, start=0):
    """One CBOR item from buf[start:]; returns (value, index after it)."""
    return _item(buf, start, len(buf), 0)

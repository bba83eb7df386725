# A deterministic CBOR subset (RFC 8949), small enough for a node and strict
# enough that one reading has exactly one encoding.
#
# Supported items: unsigned and negative integers (major types 0 and 1, up to
# 64 bits), byte strings (2), UTF-8 text strings (3), arrays (4), maps (5) whose
# keys are unsigned integers, and the simple values false, true and null.
#
# Encoding follows the core deterministic rules of RFC 8949 section 4.2.1:
# shortest argument form, definite lengths only, map keys in ascending order.
# Map keys are restricted to unsigned integers, for which bytewise-lexicographic
# order (section 4.2.1) and length-first order (section 4.2.3, what RFC 7049
# called canonical) agree, so every deterministic CBOR library produces the
# same bytes for our maps.
#
# decode() is total: for any input it returns a value or raises FrameError.
# It lives in protocol.cbor_decode, imported on first use of cbor.decode or
# cbor.decode_prefix: a node only encodes and never loads it.

import struct

MAX_DEPTH = 4          # nesting levels of arrays/maps a decoder accepts
MAX_LENGTH = 1024      # longest string or container a decoder accepts
_U64 = 0xFFFFFFFFFFFFFFFF


def _head(major, arg):
    # The initial byte and shortest argument for major type `major` (0..7).
    mt = major << 5
    if arg < 24:
        return bytes((mt | arg,))
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return struct.pack(">BH", mt | 25, arg)
    if arg < 0x100000000:
        return struct.pack(">BI", mt | 26, arg)
    return struct.pack(">BQ", mt | 27, arg)


def _encode(obj, out, depth):
    if obj is None:
        out.append(b"\xf6")
    elif obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif isinstance(obj, int):
        if obj >= 0:
            if obj > _U64:
                raise ValueError("integer too large for CBOR")
            out.append(_head(0, obj))
        else:
            if -1 - obj > _U64:
                raise ValueError("integer too small for CBOR")
            out.append(_head(1, -1 - obj))
    elif isinstance(obj, (bytes, bytearray)):
        out.append(_head(2, len(obj)))
        out.append(bytes(obj))
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out.append(_head(3, len(raw)))
        out.append(raw)
    elif isinstance(obj, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise ValueError("nesting deeper than MAX_DEPTH")
        out.append(_head(4, len(obj)))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, dict):
        if depth >= MAX_DEPTH:
            raise ValueError("nesting deeper than MAX_DEPTH")
        keys = sorted(obj)
        out.append(_head(5, len(keys)))
        for key in keys:
            if not isinstance(key, int) or isinstance(key, bool) or key < 0:
                raise ValueError("map keys must be unsigned integers")
            out.append(_head(0, key))
            _encode(obj[key], out, depth + 1)
    else:
        raise ValueError("type not in the CBOR subset: " + type(obj).__name__)


def encode(obj):
    """Deterministic CBOR bytes of `obj`; ValueError for values outside the subset."""
    out = []
    _encode(obj, out, 0)
    return b"".join(out)


def __getattr__(name):
    # decode and decode_prefix: see the top of this file.
    from . import cbor_decode

    value = getattr(cbor_decode, name)
    globals()[name] = value
    return value

"""Register codecs: 16-bit Modbus registers <-> typed values, and the RTU CRC.

On the wire every register is two bytes, high byte first (Modbus Application
Protocol v1.1b3, section 4.2), so ``words_from_bytes`` is the same for every
device. Devices differ in how they spread a wider value over several registers:

``word_order``  "big": the register with the lowest address holds the most
                significant 16 bits (ABCD); "little": the least significant
                (CDAB, common on meters built around little-endian CPUs).
``byte_order``  "big": each register holds its two bytes as they stand;
                "little": the two bytes of every register are swapped (BADC,
                or DCBA with little word order as well).

Types: u16, s16, u32, s32, u64, s64 (two's complement), float32, float64 (IEEE
754). Everything here is pure and total on valid input: the poller and the
simulator (``knute modbus-sim``) share it, and the tests check it against byte
strings written out by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

ORDERS = ("big", "little")

# type name -> (registers, struct format of the value as big-endian bytes)
TYPES: dict[str, tuple[int, str]] = {
    "u16": (1, ">H"),
    "s16": (1, ">h"),
    "u32": (2, ">I"),
    "s32": (2, ">i"),
    "u64": (4, ">Q"),
    "s64": (4, ">q"),
    "float32": (2, ">f"),
    "float64": (4, ">d"),
}
INTEGER_TYPES = ("u16", "s16", "u32", "s32", "u64", "s64")
FLOAT_TYPES = ("float32", "float64")
BIT = "bit"  # a coil or discrete input (function 1 or 2)


def register_count(dtype: str) -> int:
    """How many 16-bit registers a value of ``dtype`` takes (a bit takes one coil)."""
    if dtype == BIT:
        return 1
    return TYPES[dtype][0]


def words_from_bytes(data: bytes) -> list[int]:
    """Registers from the data bytes of a read response (high byte first, per register)."""
    if len(data) % 2:
        raise ValueError("register data must have an even number of bytes")
    return [(data[pos] << 8) | data[pos + 1] for pos in range(0, len(data), 2)]


def bytes_from_words(words: Sequence[int]) -> bytes:
    """The data bytes of registers as they travel on the wire."""
    return b"".join(struct.pack(">H", word) for word in words)


def _arrange(words: Sequence[int], word_order: str, byte_order: str) -> list[int]:
    # Both orders are involutions, so the same function maps wire order to
    # big-endian order and back.
    if word_order not in ORDERS or byte_order not in ORDERS:
        raise ValueError("word and byte order must be 'big' or 'little'")
    out = list(words)
    if word_order == "little":
        out.reverse()
    if byte_order == "little":
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def decode_value(words: Sequence[int], dtype: str, word_order: str = "big",
                 byte_order: str = "big") -> int | float:
    """The value of ``dtype`` held in ``words`` (exactly ``register_count(dtype)`` registers)."""
    count, fmt = TYPES[dtype]
    if len(words) != count:
        raise ValueError(f"{dtype} needs {count} registers, got {len(words)}")
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} outside 0..65535")
    value: int | float = struct.unpack(fmt, bytes_from_words(
        _arrange(words, word_order, byte_order)))[0]
    return value


def encode_value(value: int | float, dtype: str, word_order: str = "big",
                 byte_order: str = "big") -> list[int]:
    """The registers holding ``value`` as ``dtype`` (the inverse of ``decode_value``).

    Integers must fit the type; floats are rounded to the type's precision.
    """
    _count, fmt = TYPES[dtype]
    if dtype in INTEGER_TYPES:
        if not isinstance(value, int):
            raise TypeError(f"{dtype} needs an integer, got {value!r}")
    else:
        value = float(value)
    try:
        big = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {dtype}") from exc
    return _arrange(words_from_bytes(big), word_order, byte_order)


def crc16(data: bytes) -> int:
    """The Modbus RTU CRC-16 of ``data`` (polynomial 0xA001 reflected, start 0xFFFF).

    Modbus over Serial Line v1.02, section 6.2.2: the CRC travels low byte first.
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame_ok(frame: bytes) -> bool:
    """True if an RTU frame (address .. CRC) is long enough and its CRC matches."""
    if len(frame) < 4:
        return False
    return crc16(frame[:-2]) == frame[-2] | (frame[-1] << 8)


def with_crc(frame: bytes) -> bytes:
    """An RTU frame body followed by its CRC (low byte first)."""
    crc = crc16(frame)
    return frame + bytes((crc & 0xFF, crc >> 8))

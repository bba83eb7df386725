"""Register codecs against values worked out by hand, and hypothesis round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knute.gateway.modbus import decode
from knute.gateway.modbus.history import hourly_profile, update_hours
from knute.gateway.modbus.link import classify_silence
from knute.gateway.modbus.regmap import ReadBlock, image_from_block, map_values, parse_map

# (type, word order, byte order, data bytes as they travel in a read response, value)
# Worked out by hand: e.g. 100000 = 0x000186A0; CDAB puts the low word 0x86A0 first;
# BADC swaps the bytes inside each register; DCBA does both.
VECTORS = [
    ("u16", "big", "big", b"\x12\x34", 0x1234),
    ("u16", "big", "little", b"\x12\x34", 0x3412),
    ("s16", "big", "big", b"\xff\xfe", -2),
    ("s16", "big", "little", b"\xfe\xff", -2),
    ("s16", "big", "big", b"\x80\x00", -32768),
    ("u32", "big", "big", b"\x00\x01\x86\xa0", 100000),
    ("u32", "little", "big", b"\x86\xa0\x00\x01", 100000),
    ("u32", "big", "little", b"\x01\x00\xa0\x86", 100000),
    ("u32", "little", "little", b"\xa0\x86\x01\x00", 100000),
    ("s32", "big", "big", b"\xff\xff\xff\x85", -123),
    ("s32", "little", "big", b"\xff\x85\xff\xff", -123),
    ("s32", "big", "little", b"\xff\xff\x85\xff", -123),
    ("u64", "big", "big", b"\x00\x00\x00\x01\x00\x00\x00\x00", 1 << 32),
    ("u64", "little", "big", b"\x00\x00\x00\x00\x00\x01\x00\x00", 1 << 32),
    ("u64", "big", "little", b"\x00\x00\x01\x00\x00\x00\x00\x00", 1 << 32),
    ("u64", "little", "little", b"\x00\x00\x00\x00\x01\x00\x00\x00", 1 << 32),
    ("u64", "big", "big", b"\x01\x02\x03\x04\x05\x06\x07\x08", 0x0102030405060708),
    ("u64", "little", "big", b"\x07\x08\x05\x06\x03\x04\x01\x02", 0x0102030405060708),
    ("s64", "big", "big", b"\xff\xff\xff\xff\xff\xff\xff\xff", -1),
    ("s64", "little", "little", b"\xfe\xff\xff\xff\xff\xff\xff\xff", -2),
    ("float32", "big", "big", b"\x3f\x80\x00\x00", 1.0),
    ("float32", "big", "big", b"\xc0\x20\x00\x00", -2.5),
    ("float32", "little", "big", b"\x00\x00\xc0\x20", -2.5),
    ("float32", "big", "little", b"\x20\xc0\x00\x00", -2.5),
    ("float32", "little", "little", b"\x00\x00\x20\xc0", -2.5),
    ("float64", "big", "big", b"\x3f\xf8\x00\x00\x00\x00\x00\x00", 1.5),
    ("float64", "little", "big", b"\x00\x00\x00\x00\x00\x00\x3f\xf8", 1.5),
    ("float64", "little", "little", b"\x00\x00\x00\x00\x00\x00\xf8\x3f", 1.5),
]


def _words(data: bytes) -> list[int]:
    # Written out here rather than taken from the code under test: each
    # register is two bytes, high byte first.
    return [data[i] * 256 + data[i + 1] for i in range(0, len(data), 2)]


@pytest.mark.parametrize(("dtype", "word_order", "byte_order", "data", "value"), VECTORS)
def test_decode_by_hand(dtype: str, word_order: str, byte_order: str, data: bytes,
                        value: float) -> None:
    words = _words(data)
    assert decode.words_from_bytes(data) == words
    assert decode.decode_value(words, dtype, word_order, byte_order) == value
    assert decode.encode_value(value, dtype, word_order, byte_order) == words


def test_float32_temperature_21_53() -> None:
    # 21.53 as IEEE 754 single precision is 0x41AC3D71.
    value = decode.decode_value([0x41AC, 0x3D71], "float32")
    assert value == pytest.approx(21.53, abs=1e-5)
    assert decode.decode_value([0x3D71, 0x41AC], "float32", "little") == value


def test_wrong_register_count_and_range() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode.decode_value([1], "u32")
    with pytest.raises(ValueError, match="does not fit"):
        decode.encode_value(70000, "u16")
    with pytest.raises(ValueError, match="does not fit"):
        decode.encode_value(-1, "u32")
    with pytest.raises(TypeError):
        decode.encode_value(1.5, "s16")


def test_rtu_crc_known_frame() -> None:
    # "Read one holding register at 0 from unit 1" is 01 03 00 00 00 01 84 0A on the
    # wire: CRC 0x0A84, low byte first (a frame found in every Modbus manual).
    assert decode.crc16(bytes.fromhex("010300000001")) == 0x0A84
    assert decode.with_crc(bytes.fromhex("010300000001")) == bytes.fromhex("01030000000184 0a")
    assert decode.rtu_frame_ok(bytes.fromhex("01030000000184 0a"))
    assert not decode.rtu_frame_ok(bytes.fromhex("01030000000184 0b"))
    assert not decode.rtu_frame_ok(b"\x01\x03")


def test_classify_silence() -> None:
    good = bytes.fromhex("01030000000184 0a")
    assert classify_silence(b"", True, 1) == "timeout"
    assert classify_silence(good[:-1] + b"\x00", True, 1) == "crc"
    assert classify_silence(good[:5], True, 1) == "crc"
    assert classify_silence(decode.with_crc(b"\x07\x03\x02\x00\x01"), True, 1) == "wrong_unit"
    assert classify_silence(bytes.fromhex("000100000005090302000a"), False, 1) == "wrong_unit"
    assert classify_silence(bytes.fromhex("000100000005010302"), False, 1) == "bad_frame"


INT_RANGES = {"u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF),
              "s32": (-(1 << 31), (1 << 31) - 1), "u64": (0, (1 << 64) - 1),
              "s64": (-(1 << 63), (1 << 63) - 1)}
orders = st.sampled_from(decode.ORDERS)


@given(st.data(), orders, orders)
def test_integer_round_trip(data: st.DataObject, word_order: str, byte_order: str) -> None:
    dtype = data.draw(st.sampled_from(sorted(INT_RANGES)))
    lo, hi = INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    words = decode.encode_value(value, dtype, word_order, byte_order)
    assert len(words) == decode.register_count(dtype)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode.decode_value(words, dtype, word_order, byte_order) == value


@given(st.floats(width=32, allow_nan=False), orders, orders)
def test_float32_round_trip(value: float, word_order: str, byte_order: str) -> None:
    words = decode.encode_value(value, "float32", word_order, byte_order)
    assert decode.decode_value(words, "float32", word_order, byte_order) == value


@given(st.floats(allow_nan=False), orders, orders)
def test_float64_round_trip(value: float, word_order: str, byte_order: str) -> None:
    words = decode.encode_value(value, "float64", word_order, byte_order)
    assert decode.decode_value(words, "float64", word_order, byte_order) == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4), orders, orders)
def test_decode_then_encode_is_identity(words: list[int], word_order: str,
                                        byte_order: str) -> None:
    for dtype in ("u64", "s64", "float64"):
        value = decode.decode_value(words, dtype, word_order, byte_order)
        if isinstance(value, float) and math.isnan(value):
            continue  # NaN payload bits are not kept by every platform
        assert decode.encode_value(value, dtype, word_order, byte_order) == words


# ---------------------------------------------------------------- map values

AIR_MAP = """
[device]
kind = "air_quality"
[registers.temperature]
function = 4
address = 0
type = "float32"
unit = "degC"
[registers.humidity]
function = 4
address = 2
type = "u16"
scale = 0.1
[registers.pressure]
function = 4
address = 3
type = "u32"
unit = "Pa"
word_order = "little"
[registers.status]
function = 3
address = 10
type = "u16"
field = "status"
bits = { 0 = "pm_fault", 15 = "warmup" }
[registers.fault_input]
function = 2
address = 4
field = "status"
bit = "no2_fault"
"""


def test_map_values_to_wire_integers() -> None:
    rmap = parse_map(AIR_MAP, "air.toml")
    assert rmap.reads() == [ReadBlock(2, 4, 1), ReadBlock(3, 10, 1), ReadBlock(4, 0, 5)]
    image = {}
    # temperature 21.53 °C (0x41AC3D71), humidity 55.4 % as 554, pressure 101330 Pa as
    # 0x00018BD2 low word first, status bits 0 and 15, discrete input 4 on.
    image.update(image_from_block(ReadBlock(4, 0, 5), [0x41AC, 0x3D71, 554, 0x8BD2, 0x0001]))
    image.update(image_from_block(ReadBlock(3, 10, 1), [0x8001]))
    image.update(image_from_block(ReadBlock(2, 4, 1), [True]))
    values, problems = map_values(rmap, image)
    assert problems == []
    # kinds: temperature div 10 -> 215; humidity 1 % steps -> 55; pressure hPa div 10 ->
    # 1013.3 hPa -> 10133; status bits pm_fault(0), no2_fault(3), warmup(4).
    assert values == {"temperature": 215, "humidity": 55, "pressure": 10133,
                      "status": 0b11001}


def test_map_values_out_of_range_is_null_for_nullable() -> None:
    rmap = parse_map(AIR_MAP, "air.toml")
    image = {}
    # NaN temperature (0x7FC00000) and 150 % humidity (1500 x 0.1)
    image.update(image_from_block(ReadBlock(4, 0, 5), [0x7FC0, 0, 1500, 0x8BCD, 1]))
    image.update(image_from_block(ReadBlock(3, 10, 1), [0]))
    image.update(image_from_block(ReadBlock(2, 4, 1), [False]))
    values, problems = map_values(rmap, image)
    assert values["temperature"] is None and values["humidity"] is None
    assert problems == ["registers.temperature", "registers.humidity"]


def test_reads_group_contiguous_and_respect_125() -> None:
    lines = ['[device]\nkind = "air_quality"\nmax_gap = 2\n']
    # 130 u16 registers at 0..129 can not be one request: 125 + 5.
    for n in range(130):
        lines.append(f'[registers.r{n}]\nfunction = 4\naddress = {n}\ntype = "u16"\n'
                     f'field = "status"\nbits = {{ 0 = "warmup" }}\n')
    lines.append('[registers.far]\nfunction = 4\naddress = 133\ntype = "u16"\nfield = "status"\n'
                 'bits = { 1 = "pm_fault" }\n')
    lines.append('[registers.farther]\nfunction = 4\naddress = 140\ntype = "u16"\n'
                 'field = "status"\nbits = { 1 = "pm_fault" }\n')
    lines.append('[registers.held]\nfunction = 3\naddress = 0\ntype = "u32"\n'
                 'field = "status"\nbits = { 2 = "pm_fault" }\n')
    rmap = parse_map("".join(lines), "big.toml")
    # 130..132 is a gap of 3 > max_gap 2 after the 125-register split at 125..129
    assert rmap.reads() == [ReadBlock(3, 0, 2), ReadBlock(4, 0, 125), ReadBlock(4, 125, 5),
                            ReadBlock(4, 133, 1), ReadBlock(4, 140, 1)]
    assert all(b.count <= 125 for b in rmap.reads())


def test_hourly_profile() -> None:
    hours: list[tuple[int, int]] = []
    hours = update_hours(hours, 1000, 5000, 25)
    assert hourly_profile(hours, 5000, 24) == ([0], 1001)
    hours = update_hours(hours, 1000, 5100, 25)     # same hour: boundary unchanged
    assert hourly_profile(hours, 5100, 24) == ([100], 1001)
    hours = update_hours(hours, 1001, 5300, 25)
    hours = update_hours(hours, 1002, 5350, 25)
    assert hourly_profile(hours, 5400, 24) == ([300, 50, 50], 1003)
    assert hourly_profile(hours, 5400, 2) == ([50, 50], 1003)
    hours = update_hours(hours, 1005, 6000, 25)     # the gateway missed hours 1003, 1004
    assert hourly_profile(hours, 6010, 24) == ([10], 1006)
    hours = update_hours(hours, 1006, 10, 25)       # total went down: meter replaced
    assert hours == [(1006, 10)]

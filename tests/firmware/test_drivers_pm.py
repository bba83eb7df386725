"""SDS011 and PMS5003 drivers against byte streams built from their data sheets."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.drivers.pms5003 import PMS5003
from firmware.drivers.sds011 import SDS011
from tests.firmware.airsim import (
    ByteUart,
    pms5003_frame,
    pms5003_reply,
    sds011_frame,
    sds011_reply,
)


def _drain(driver: Any, limit: int = 1000) -> list[tuple[Any, ...]]:
    """Every reading the driver parses from what its UART holds."""
    out = []
    for _ in range(limit):
        if not driver.poll():
            break
        out.append((driver.pm1, driver.pm2_5, driver.pm10))
    return out


def _corrupt(frame: bytearray, where: int, flip: int, header: tuple[int, ...]) -> None:
    """Change one byte; past the header, never into a header byte (no forged headers)."""
    value = frame[where] ^ flip
    if where > 1:
        while value in header or value == frame[where]:
            value = (value + 1) & 0xFF
    frame[where] = value


# --- SDS011 -----------------------------------------------------------------

def test_sds011_frame_from_the_specification_is_decoded() -> None:
    # AA C0 | PM2.5 0x00D4 = 21.2 ug/m3 | PM10 0x01F3 = 49.9 ug/m3 | ID 0xA1B2 | sum | AB
    frame = bytes.fromhex("aac0d400f301a1b2" + "00" + "ab")
    frame = frame[:8] + bytes([sum(frame[2:8]) & 0xFF]) + frame[9:]
    uart = ByteUart()
    uart.feed(frame)
    sds = SDS011(uart)
    assert _drain(sds) == [(None, 212, 499)]
    assert (sds.frames, sds.bad_frames, sds.skipped) == (1, 0, 0)


def test_sds011_commands_match_the_control_protocol_examples() -> None:
    uart = ByteUart()
    sds = SDS011(uart)
    sds.sleep()
    sds.wake()
    sds.set_active()
    sds.set_continuous()
    sds.query()
    assert uart.tx == [
        bytes.fromhex("aab406010000000000000000000000ffff05ab"),   # set sleep
        bytes.fromhex("aab406010100000000000000000000ffff06ab"),   # set work
        bytes.fromhex("aab402010000000000000000000000ffff01ab"),   # active report mode
        bytes.fromhex("aab408010000000000000000000000ffff07ab"),   # continuous
        bytes.fromhex("aab404000000000000000000000000ffff02ab"),   # query data
    ]


def test_sds011_replies_are_counted_not_read_as_data() -> None:
    uart = ByteUart()
    uart.feed(sds011_reply(6, 1, 0) + sds011_frame(100, 150) + sds011_reply(6, 1, 1))
    sds = SDS011(uart)
    assert _drain(sds) == [(None, 100, 150)]
    sds.poll()
    assert (sds.frames, sds.replies, sds.bad_frames) == (1, 2, 0)
    assert sds.working is True


def test_sds011_bad_checksum_bad_tail_and_truncated_frames_are_counted_and_dropped() -> None:
    good = [sds011_frame(10 * i, 20 * i) for i in range(1, 5)]
    bad_sum = bytearray(sds011_frame(999, 999))
    bad_sum[8] ^= 0xFF
    bad_tail = bytearray(sds011_frame(888, 888))
    bad_tail[9] = 0x00
    truncated = sds011_frame(777, 777)[:6]
    stream = (good[0] + bytes(bad_sum) + good[1] + bytes(bad_tail) + truncated + good[2]
              + b"\x01\x02\xff\x00garbage" + good[3])
    uart = ByteUart()
    uart.feed(stream)
    sds = SDS011(uart)
    assert _drain(sds) == [(None, 10, 20), (None, 20, 40), (None, 30, 60), (None, 40, 80)]
    assert sds.frames == 4
    assert sds.bad_frames == 3
    assert sds.skipped == len(stream) - 4 * 10


def test_sds011_frames_delivered_one_byte_at_a_time() -> None:
    uart = ByteUart(chunk=1)
    sds = SDS011(uart)
    readings = []
    for i in range(5):
        for byte in sds011_frame(i, i + 1):
            uart.feed(bytes([byte]))
            readings += _drain(sds)
    assert readings == [(None, i, i + 1) for i in range(5)]
    assert sds.bad_frames == 0


def test_sds011_flush_forgets_buffered_bytes() -> None:
    uart = ByteUart()
    sds = SDS011(uart)
    uart.feed(sds011_frame(1, 2)[:5])
    assert not sds.poll()
    uart.feed(b"\x00" * 40)
    sds.flush()
    uart.feed(sds011_frame(3, 4))
    assert _drain(sds) == [(None, 3, 4)]
    assert sds.bad_frames == 0


# Frames whose bytes never contain the header pair 0xAA 0xC0/0xC5: PM values
# and ids built from bytes below 0xAA, so no false header can start inside a frame.
_small = st.integers(0, 0xA9)
_sds_values = st.tuples(_small, _small, _small, _small).map(
    lambda t: (t[0] | (t[1] << 8), t[2] | (t[3] << 8)))
_noise = st.binary(max_size=12).map(lambda b: bytes(x for x in b if x != 0xAA))


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.tuples(_sds_values, _noise, st.integers(-1, 9), st.integers(1, 255)),
                      max_size=12),
       chunk=st.integers(0, 7))
def test_sds011_recovers_every_intact_frame_from_noise_and_corruption(
    items: list[tuple[tuple[int, int], bytes, int, int]], chunk: int
) -> None:
    """Garbage between frames and one corrupted byte in some frames: intact frames survive."""
    stream = b""
    expected = []
    for (pm25, pm10), noise, where, flip in items:
        frame = bytearray(sds011_frame(pm25, pm10, dev_id=0x1122))
        if where >= 0:
            _corrupt(frame, where, flip, (0xAA, 0xC0, 0xC5))
        else:
            expected.append((None, pm25, pm10))
        stream += noise + bytes(frame)
    uart = ByteUart(chunk=chunk)
    uart.feed(stream)
    sds = SDS011(uart)
    assert _drain(sds, 10 * len(stream) + 10) == expected
    corrupted = sum(1 for item in items if item[2] >= 0)
    assert sds.frames == len(expected)
    assert sds.bad_frames <= corrupted
    # Byte 1 turned from 0xC0 into 0xC5 (flip 5) makes a valid reply frame: the
    # checksum covers bytes 2..7 only, so the wire cannot tell it from a real reply,
    # and the reader takes its 10 bytes as one. Every other byte is skipped.
    forged = sum(1 for item in items if item[2] == 1 and item[3] == 0xC0 ^ 0xC5)
    assert sds.replies == forged
    assert sds.skipped == len(stream) - 10 * len(expected) - 10 * forged


# --- PMS5003 ----------------------------------------------------------------

def test_pms5003_frame_gives_atmospheric_values_in_tenths() -> None:
    uart = ByteUart()
    uart.feed(pms5003_frame(5, 8, 12, std=(6, 9, 13), counts=(900, 300, 50, 5, 1, 0)))
    pms = PMS5003(uart)
    assert _drain(pms) == [(50, 80, 120)]
    uart.feed(pms5003_frame(5, 8, 12, std=(6, 9, 13)))
    cf1 = PMS5003(uart, cf1=True)
    assert _drain(cf1) == [(60, 90, 130)]


def test_pms5003_frame_bytes_match_the_manual_layout() -> None:
    frame = pms5003_frame(1, 2, 3)
    assert len(frame) == 32
    assert frame[:4] == bytes([0x42, 0x4D, 0x00, 0x1C])
    assert (frame[30] << 8) | frame[31] == sum(frame[:30])


def test_pms5003_commands_match_the_manual() -> None:
    uart = ByteUart()
    pms = PMS5003(uart)
    pms.sleep()
    pms.wake()
    pms.set_passive()
    pms.set_active()
    pms.request()
    assert uart.tx == [
        bytes.fromhex("424de400000173"),
        bytes.fromhex("424de400010174"),
        bytes.fromhex("424de100000170"),
        bytes.fromhex("424de100010171"),
        bytes.fromhex("424de200000171"),
    ]


def test_pms5003_replies_bad_frames_and_noise() -> None:
    good = [pms5003_frame(i, 2 * i, 3 * i) for i in range(1, 4)]
    bad_sum = bytearray(pms5003_frame(50, 50, 50))
    bad_sum[10] ^= 0x10
    bad_len = bytearray(pms5003_frame(60, 60, 60))
    bad_len[3] = 20                     # a PMS3003-style length: not this sensor
    truncated = pms5003_frame(70, 70, 70)[:17]
    stream = (pms5003_reply(0xE4, 1) + good[0] + bytes(bad_sum) + b"BBB\x42\x00"
              + good[1] + bytes(bad_len) + truncated + good[2])
    uart = ByteUart(chunk=5)
    uart.feed(stream)
    pms = PMS5003(uart)
    assert _drain(pms) == [(10, 20, 30), (20, 40, 60), (30, 60, 90)]
    assert pms.replies == 1
    assert pms.last_reply == 0xE4
    assert pms.bad_frames == 3
    assert pms.skipped == len(stream) - 3 * 32 - 8


_pms_small = st.integers(0, 0x41)
_pms_values = st.tuples(_pms_small, _pms_small, _pms_small)
_pms_noise = st.binary(max_size=40).map(lambda b: bytes(x for x in b if x not in (0x42, 0x4D)))


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.tuples(_pms_values, _pms_noise, st.integers(-1, 31),
                                st.integers(1, 255)), max_size=8),
       chunk=st.integers(0, 33))
def test_pms5003_recovers_every_intact_frame_from_noise_and_corruption(
    items: list[tuple[tuple[int, int, int], bytes, int, int]], chunk: int
) -> None:
    """As for the SDS011: only corrupted frames are lost, whatever the read sizes."""
    stream = b""
    expected = []
    for (pm1, pm25, pm10), noise, where, flip in items:
        frame = bytearray(pms5003_frame(pm1, pm25, pm10))
        if where >= 0:
            _corrupt(frame, where, flip, (0x42, 0x4D))
        else:
            expected.append((pm1 * 10, pm25 * 10, pm10 * 10))
        stream += noise + bytes(frame)
    uart = ByteUart(chunk=chunk)
    uart.feed(stream)
    pms = PMS5003(uart)
    assert _drain(pms, 10 * len(stream) + 10) == expected
    assert pms.frames == len(expected)
    assert pms.bad_frames <= sum(1 for item in items if item[2] >= 0)

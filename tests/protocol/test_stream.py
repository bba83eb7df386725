"""Property tests of the COBS + CRC-32 link framing."""

from __future__ import annotations

import binascii
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.protocol import stream
from knute.protocol.errors import FrameError

bodies = st.binary(max_size=stream.MAX_BODY)
records = st.lists(st.tuples(st.sampled_from(stream.RECORD_TYPES), bodies), max_size=6)


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_no_zero_bytes(data: bytes) -> None:
    encoded = stream.cobs_encode(data)
    assert 0 not in encoded
    assert stream.cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + 1 + len(data) // 254


@given(records, st.data())
def test_records_survive_any_split(recs: list[tuple[int, bytes]], data: st.DataObject) -> None:
    wire = b"".join(stream.encode_record(t, b) for t, b in recs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    dec = stream.StreamDecoder()
    got = []
    start = 0
    for cut in [*cuts, len(wire)]:
        got.extend(dec.feed(wire[start:cut]))
        start = cut
    assert got == recs
    assert dec.pending() == 0


@settings(max_examples=300)
@given(records, st.binary(max_size=400))
def test_garbage_never_hides_the_following_record(
    recs: list[tuple[int, bytes]], garbage: bytes
) -> None:
    dec = stream.StreamDecoder()
    dec.feed(garbage)
    got = [item for item in dec.feed(b"".join(stream.encode_record(t, b) for t, b in recs))
           if not isinstance(item, FrameError)]
    # Garbage may itself look like a record only if it carries a valid CRC-32.
    assert got[len(got) - len(recs):] == recs


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_decoder_is_total(data: bytes) -> None:
    for item in stream.StreamDecoder().feed(data):
        if isinstance(item, FrameError):
            assert item.reason.startswith("link_")
        else:
            assert item[0] in stream.RECORD_TYPES


def test_oversize_is_reported_once_and_the_next_record_arrives() -> None:
    dec = stream.StreamDecoder()
    good = stream.encode_record(stream.REC_FRAME, b"abc")
    items = dec.feed(b"\x01" * (stream.MAX_ENCODED * 3) + good)
    assert [i.reason for i in items if isinstance(i, FrameError)] == ["link_oversize"]
    assert items[-1] == (stream.REC_FRAME, b"abc")


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        (stream.cobs_encode(b"\x01\x02"), "link_short"),
        (stream.cobs_encode(b"\x09hello\x00\x00\x00\x00"), "link_crc"),
        (b"\x05ab", "link_cobs"),
    ],
)
def test_record_rejections(encoded: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        stream.decode_record(encoded)
    assert err.value.reason == reason


def test_unknown_record_type() -> None:
    rec = stream.encode_record(1, b"x")
    raw = bytearray(stream.cobs_decode(rec[1:-1]))
    raw[0] = 9
    raw[-4:] = struct.pack("<I", binascii.crc32(bytes(raw[:-4])))
    with pytest.raises(FrameError) as err:
        stream.decode_record(stream.cobs_encode(bytes(raw)))
    assert err.value.reason == "link_type"


def test_radio_record_round_trip_and_short_body() -> None:
    body = stream.pack_radio(-120, 95, 868_300_000, 7, b"frame")
    meta, frame = stream.unpack_radio(body)
    assert meta == {"rssi_dbm": -120, "snr_db": 9.5, "freq_hz": 868_300_000, "sf": 7}
    assert frame == b"frame"
    with pytest.raises(FrameError) as err:
        stream.unpack_radio(b"\x00" * 8)
    assert err.value.reason == "link_radio"

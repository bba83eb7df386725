"""The downlink report field in the kinds table, the TX link record (protocol.md 6, 12.7)."""

from __future__ import annotations

import pytest

from knute.protocol import cbor, downlink, frame, kinds, stream
from knute.protocol.errors import FrameError

KEY = bytes(range(16))


@pytest.mark.parametrize("kid", sorted(kinds.KINDS))
def test_every_kind_ends_with_the_report_field(kid: int) -> None:
    fields = kinds.table_entry(kid)[2]
    assert fields[-1] == downlink.REPORT_FIELD == kinds.REPORT_FIELD
    assert kinds.KINDS[kid]["fields"][-1] == {
        "name": "dl", "type": "series", "unit": "", "min": 0, "max": 0xFFFFFF,
        "len": (1, 9), "optional": True}


def test_a_water_frame_with_a_report_but_no_flow_carries_null() -> None:
    values = {"index": 123456, "profile_end_h": 200, "alarms": 0, "battery": 17,
              "profile": [1, 2, 3], "dl": [3, 512, 5683]}
    payload = kinds.pack_id(1, values)
    assert payload == [123456, 200, 0, 17, [1, 2, 3], None, [3, 512, 5683]]
    assert cbor.encode([3, 512, 5683]).hex() == "8303190200191633"   # section 12.7
    unpacked = kinds.unpack(kinds.KINDS[1], payload)
    assert unpacked["dl"] == [3, 512, 5683] and unpacked["max_flow"] is None
    buf = frame.encode("water_meter", 0x1234, 7, values, KEY)
    assert frame.decode(buf, KEY)["values"] == unpacked


def test_a_frame_without_report_is_unchanged() -> None:
    values = {"index": 1, "profile_end_h": 2, "alarms": 0, "battery": 3, "profile": [4]}
    assert kinds.pack_id(1, values) == [1, 2, 0, 3, [4]]
    air = {"pm1": 1, "pm2_5": 2, "pm10": 3, "temperature": 4, "humidity": 5,
           "pressure": 10000, "status": 0}
    assert len(kinds.pack_id(2, air)) == 7
    assert kinds.pack_id(2, {**air, "dl": [1]})[-2:] == [None, [1]]


@pytest.mark.parametrize("bad", [[], [1] * 10, [1 << 24], ["x"]])
def test_a_bad_report_is_refused(bad: list[object]) -> None:
    values = {"index": 1, "profile_end_h": 2, "alarms": 0, "battery": 3, "profile": [4],
              "dl": bad}
    with pytest.raises(FrameError) as err:
        kinds.pack_id(1, values)
    assert err.value.reason in ("payload_range", "payload_type")


def test_tx_record_round_trip() -> None:
    payload = bytes.fromhex("60000012340000010aa27fc07e0849a0e2082ac49cc77d4d20bf8012")
    body = stream.pack_tx(1796158015123, 868100000, 12, payload)
    assert len(body) == stream.TX_META_LEN + len(payload)
    rec = stream.encode_record(stream.REC_TX, body)
    (got,) = stream.StreamDecoder().feed(rec)
    assert got == (stream.REC_TX, body)
    assert stream.unpack_tx(body) == (1796158015123, 868100000, 12, payload)


def test_short_tx_record_is_link_radio() -> None:
    with pytest.raises(FrameError) as err:
        stream.unpack_tx(bytes(12))
    assert err.value.reason == "link_radio"

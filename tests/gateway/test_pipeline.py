"""The pure pipeline: verify == protocol.frame.decode, replay rules, dedup window."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import pipeline as pl
from knute.gateway.pipeline_checks import Verifier
from knute.gateway.registry import Device
from knute.gateway.status import Counters
from knute.protocol import ccm, frame, kinds
from knute.protocol.errors import FrameError

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
DEV = 0x00001234
WATER = {"index": 1000, "profile_end_h": 7, "battery": 18, "profile": [1, 2, 3]}


def water(fcnt: int, dev: int = DEV, key: bytes = KEY, **over: Any) -> bytes:
    """A water-meter frame."""
    return frame.encode("water_meter", dev, fcnt, {**WATER, **over}, key)


def rx(buf: bytes, at: float = 0.0, source: str = "s1", **meta: Any) -> pl.Reception:
    """A reception of ``buf`` at monotonic time ``at``."""
    return pl.Reception(source, "radio" if meta else "serial", buf, 1_700_000_000.0 + at, at,
                        {"source": source, **meta})


def device(dev: int = DEV, kind: str = "water_meter", key: bytes = KEY) -> Device:
    """A registry entry."""
    return Device(dev, kind, key, name="meter", site="north")


def make(replay: Mapping[int, int] | None = None, window: float = 0.2) -> pl.Pipeline:
    """A pipeline with DEV registered."""
    return pl.Pipeline({DEV: device()}, replay, counters=Counters(), dedup_window_s=window)


class AnyId(Mapping[int, Device]):
    """A registry in which every device id has KEY (for the decode equivalence)."""

    def __getitem__(self, key: int) -> Device:
        return device(key)

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def outcome_decode(buf: bytes) -> Any:
    """protocol.frame.decode's result or its FrameError reason."""
    try:
        return frame.decode(buf, KEY)
    except FrameError as exc:
        return ("error", exc.reason)


def outcome_verify(verifier: Verifier, buf: bytes) -> Any:
    """Verifier.verify's result or its FrameError reason."""
    try:
        _kind, dev, _fcnt, _tag = frame.parse_header(buf)
    except FrameError as exc:
        return ("error", exc.reason)
    try:
        return verifier.verify(buf, device(dev))
    except FrameError as exc:
        return ("error", exc.reason)


VERIFIER = Verifier()


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_verify_equals_decode_on_random_bytes(buf: bytes) -> None:
    assert outcome_verify(VERIFIER, buf) == outcome_decode(buf)


@settings(max_examples=300)
@given(fcnt=st.integers(0, frame.MAX_FCNT), dev=st.integers(0, frame.MAX_DEVICE_ID),
       index=st.integers(0, 0xFFFFFFFF), tag_len=st.sampled_from([4, 8]),
       flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
       cut=st.integers(0, 64))
def test_verify_equals_decode_on_mutated_frames(fcnt: int, dev: int, index: int, tag_len: int,
                                                flips: list[tuple[int, int]],
                                                cut: int) -> None:
    good = frame.encode("water_meter", dev, fcnt, {**WATER, "index": index}, KEY, tag_len)
    assert outcome_verify(VERIFIER, good) == frame.decode(good, KEY)
    bad = bytearray(good)
    for pos, xor in flips:
        bad[pos % len(bad)] ^= xor
    if cut:
        bad = bad[:-cut] if cut < len(bad) else bad[:1]
    assert outcome_verify(VERIFIER, bytes(bad)) == outcome_decode(bytes(bad))


@settings(max_examples=300)
@given(plain=st.binary(min_size=1, max_size=60), kind_id=st.sampled_from([1, 2]),
       fcnt=st.integers(0, 1000), tag_len=st.sampled_from([4, 8]))
def test_verify_equals_decode_on_authentic_garbage_payloads(plain: bytes, kind_id: int,
                                                            fcnt: int, tag_len: int) -> None:
    # A correct tag over a plaintext that is not a valid payload: both must reach
    # the CBOR/payload checks and fail (or pass) the same way.
    hdr = frame.header(kind_id, DEV, fcnt, tag_len)
    buf = hdr + ccm.seal(ccm.aes_block(KEY), frame.nonce(DEV, fcnt), hdr, plain, tag_len)
    assert outcome_verify(VERIFIER, buf) == outcome_decode(buf)


def test_verifier_cache_follows_key_changes() -> None:
    verifier = Verifier()
    buf = water(1)
    assert verifier.verify(buf, device())["fcnt"] == 1
    try:
        verifier.verify(buf, device(key=OTHER_KEY))
    except FrameError as exc:
        assert exc.reason == "frame_tag"
    else:
        raise AssertionError("a changed key must not verify with the cached cipher")


def test_accepts_and_releases_after_window() -> None:
    p = make()
    verdict = p.submit(rx(water(1), at=10.0))
    assert verdict == pl.Verdict("pending", None, DEV, 1)
    assert p.due(10.1) == []
    assert p.next_deadline() == 10.2
    (ready,) = p.due(10.2)
    assert ready.decoded == frame.decode(water(1), KEY)
    assert ready.receivers == [{"source": "s1"}]
    assert ready.source_type == "serial"
    assert ready.battery == 90
    assert p.waiting() == 0


def test_rejections_counted_by_reason() -> None:
    p = make({DEV: 5})
    cases = [
        (b"\x00" * 3, "frame_short"),
        (b"\x40" + b"\x00" * 300, "oversize"),
        (water(9, dev=0xDEAD), "unknown_device"),
        (water(9, key=OTHER_KEY), "frame_tag"),
        (frame.encode("air_quality", DEV, 9, {"pm2_5": 10}, KEY), "kind_mismatch"),
        (water(4), "replay"),
        (water(5), "duplicate"),
        (water(3), "replay"),
    ]
    for buf, reason in cases:
        verdict = p.submit(rx(buf))
        assert verdict.status == "rejected" and verdict.reason == reason, (buf.hex(), verdict)
    snap = p.counters.snapshot()
    assert snap["rejected"] == {"frame_short": 1, "oversize": 1, "unknown_device": 1,
                                "frame_tag": 1, "kind_mismatch": 1, "replay": 2,
                                "duplicate": 1}
    assert snap["sources"]["s1"]["rejected"] == 8
    assert p.submit(rx(water(6))).status == "pending"


def test_duplicate_versus_replay_at_the_same_counter() -> None:
    p = make(window=0.0)
    first = water(7, index=1)
    assert p.submit(rx(first, at=0.0)).status == "pending"
    assert len(p.due(0.0)) == 1
    assert p.submit(rx(first, at=5.0)).reason == "duplicate"
    # Same counter, different (authentic) content: a replayed nonce, not a copy.
    assert p.submit(rx(water(7, index=2), at=5.0)).reason == "replay"


def test_same_counter_unknown_bytes_after_restart_is_duplicate() -> None:
    p = make({DEV: 7})
    assert p.submit(rx(water(7))).reason == "duplicate"


def test_counter_reset_rule() -> None:
    p = make({DEV: 1000})
    for fcnt in (0, 1, 15):
        assert p.submit(rx(water(fcnt))).reason == "counter_reset"
    assert p.submit(rx(water(16))).reason == "replay"
    assert p.submit(rx(water(999))).reason == "replay"
    p.forget_counter(DEV)     # the operator's reset-counter
    assert p.submit(rx(water(2))).status == "pending"
    # A low counter that was never high is an ordinary replay.
    q = make({DEV: 10})
    assert q.submit(rx(water(3))).reason == "replay"


def test_dedup_merges_copies_from_every_receiver() -> None:
    p = make()
    buf = water(3)
    assert p.submit(rx(buf, 1.0, "bridge", rssi_dbm=-90, snr_db=7.5)).status == "pending"
    assert p.submit(rx(buf, 1.05, "concentrator", rssi_dbm=-101, gateway_eui="01" * 8)
                    ).status == "merged"
    assert p.submit(rx(buf, 1.1, "wired")).status == "merged"
    (ready,) = p.due(1.3)
    assert [r["source"] for r in ready.receivers] == ["bridge", "concentrator", "wired"]
    assert ready.receivers[1]["gateway_eui"] == "01" * 8
    assert ready.source_type == "radio"
    assert ready.received_at == 1_700_000_001.0
    # After the window closed, another copy is a duplicate, not a second reading.
    assert p.submit(rx(buf, 1.4, "late")).reason == "duplicate"
    assert p.counters.get("merged") == 2


def test_release_keeps_arrival_order_per_device() -> None:
    p = make()
    for i, fcnt in enumerate((1, 2, 3, 4)):
        assert p.submit(rx(water(fcnt), at=i * 0.05)).status == "pending"
    first = p.due(0.26)
    assert [r.decoded["fcnt"] for r in first] == [1, 2]
    rest = p.drain()
    assert [r.decoded["fcnt"] for r in rest] == [3, 4]


def test_failed_commit_reload_restores_replay_state() -> None:
    p = make({DEV: 1})
    assert p.submit(rx(water(2))).status == "pending"
    p.drain()
    p.load_counters({DEV: 1})       # the spool never committed fcnt 2
    assert p.submit(rx(water(2))).status == "pending"


def test_registry_reload_adds_and_removes_devices() -> None:
    p = make()
    other = 0x42
    assert p.submit(rx(water(1, dev=other))).reason == "unknown_device"
    p.update_devices({DEV: device(), other: device(other)})
    assert p.submit(rx(water(1, dev=other))).status == "pending"
    p.update_devices({other: device(other)})
    assert p.submit(rx(water(9))).reason == "unknown_device"


def test_to_accepted_builds_topic_and_reading() -> None:
    p = make()
    buf = water(3, alarms=1)
    p.submit(rx(buf, 0.0, "bridge", rssi_dbm=-90))
    (ready,) = p.drain()
    acc = pl.to_accepted(ready, prefix="city", gateway_id="gw1")
    assert acc.topic == "city/water_meter/00001234/up"
    assert (acc.device_id, acc.fcnt, acc.kind, acc.alarm) == (DEV, 3, "water_meter", True)
    assert acc.reading is not None and acc.payload == acc.reading.json() and acc.epoch == 0
    doc = json.loads(acc.payload)
    assert doc["id"] == "00001234:3"
    assert doc["receivers"] == [{"source": "bridge", "rssi_dbm": -90}]
    assert doc["alarms"] == ["leak"]
    assert doc["site"] == {"site": "north"}


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=40))
def test_replay_guard_never_accepts_a_counter_twice(events: list[tuple[int, bool]]) -> None:
    """Whatever arrives, accepted counters strictly increase per device."""
    p = make(window=0.0)
    accepted: list[int] = []
    for i, (fcnt, alt) in enumerate(events):
        verdict = p.submit(rx(water(fcnt, index=2 if alt else 1), at=float(i)))
        if verdict.status == "pending":
            accepted.append(fcnt)
        p.due(float(i))
    assert accepted == sorted(set(accepted))


# -- already-decoded readings (Modbus polls) ---------------------------------------------

MODBUS_RX = {"source": "modbus", "bus": "plant", "unit_id": 3}
MB_VALUES = {"index": 123456, "max_flow": 900, "alarms": 0, "battery": 19, "profile": [4, 5],
             "profile_end_h": 9}


def polled(fcnt: int, dev: int = DEV, kind: str = "water_meter",
           values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Modbus reading's frame dict, as the poller hands it on."""
    kid = next(k for k, v in kinds.KINDS.items() if v["name"] == kind)
    return {"kind": kind, "kind_id": kid, "device_id": dev, "fcnt": fcnt, "tag_len": 0,
            "values": dict(MB_VALUES if values is None else values)}


def submit_polled(p: pl.Pipeline, frm: Mapping[str, Any], at: float = 0.0) -> pl.Verdict:
    """Submit one polled reading heard at monotonic ``at``."""
    return p.submit_reading(frm, MODBUS_RX, 1_700_000_000.0 + at, at)


def test_polled_reading_is_accepted_with_source_modbus() -> None:
    p = make()
    assert submit_polled(p, polled(1), at=3.0) == pl.Verdict("pending", None, DEV, 1)
    assert p.due(3.1) == []
    (ready,) = p.due(3.2)
    assert ready.decoded == polled(1)
    assert ready.source_type == "modbus"
    acc = pl.to_accepted(ready, prefix="city", gateway_id="gw1")
    assert acc.topic == "city/water_meter/00001234/up"
    assert acc.reading is not None and acc.payload == acc.reading.json() and acc.epoch == 0
    doc = json.loads(acc.payload)
    assert doc["source"] == "modbus" and doc["id"] == "00001234:1"
    assert doc["receivers"] == [MODBUS_RX]
    assert doc["readings"]["index"] == {"value": 123456, "unit": "L"}
    assert doc["battery"] == 95 and doc["site"] == {"site": "north"}
    assert p.counters.snapshot()["rejected"] == {}


def test_polled_reading_rejections_by_reason() -> None:
    p = make({DEV: 5})
    cases: list[tuple[dict[str, Any], str]] = [
        (polled(9, dev=0xDEAD), "unknown_device"),
        (polled(9, kind="air_quality", values={"pm2_5": 10}), "kind_mismatch"),
        (polled(4), "replay"),
        (polled(5), "duplicate"),
        (polled(2), "replay"),
        ({**polled(9), "kind": "noise"}, "frame_kind"),
        ({**polled(9), "kind_id": 99}, "frame_kind"),
        (polled(frame.MAX_FCNT + 1), "frame_fcnt"),
        (polled(9, dev=-1), "frame_device"),
        ({**polled(9), "values": [1, 2]}, "payload_shape"),
        (polled(9, values={**MB_VALUES, "battery": 999}), "payload_range"),
        (polled(9, values={"index": 1}), "payload_missing"),
        (polled(9, values={**MB_VALUES, "colour": 1}), "payload_unknown"),
    ]
    for frm, reason in cases:
        verdict = submit_polled(p, frm)
        assert verdict.status == "rejected" and verdict.reason == reason, (frm, verdict)
    snap = p.counters.snapshot()
    assert snap["sources"]["modbus"]["rejected"] == len(cases)
    assert p.waiting() == 0
    assert submit_polled(p, polled(6)).status == "pending"


def test_polled_duplicate_versus_replay_by_values() -> None:
    p = make(window=0.0)
    assert submit_polled(p, polled(7)).status == "pending"
    assert len(p.due(0.0)) == 1
    # The same values again at the same counter: a copy; other values: a replay.
    same = polled(7)
    same["values"] = dict(reversed(list(same["values"].items())))   # key order is no matter
    assert submit_polled(p, same, at=1.0).reason == "duplicate"
    assert submit_polled(p, polled(7, values={**MB_VALUES, "index": 1}), at=1.0
                         ).reason == "replay"
    assert submit_polled(p, polled(8), at=1.0).status == "pending"


def test_polled_reading_in_dedup_window_merges_identical_and_refuses_other() -> None:
    p = make()
    assert submit_polled(p, polled(3), at=1.0).status == "pending"
    assert submit_polled(p, polled(3), at=1.05).status == "merged"
    assert submit_polled(p, polled(3, values={**MB_VALUES, "index": 2}), at=1.1
                         ).reason == "replay"
    (ready,) = p.drain()
    assert ready.receivers == [MODBUS_RX, MODBUS_RX]


def test_polled_and_radio_share_replay_state() -> None:
    p = make(window=0.0)
    assert p.submit(rx(water(10))).status == "pending"
    assert submit_polled(p, polled(10)).reason == "replay"
    assert submit_polled(p, polled(11)).status == "pending"
    assert p.submit(rx(water(11))).reason == "replay"


def test_values_digest_is_canonical() -> None:
    a = pl.values_digest({"a": 1, "b": [1, 2]})
    assert a == pl.values_digest({"b": [1, 2], "a": 1})
    assert a != pl.values_digest({"a": 1, "b": [2, 1]})
    assert len(a) == 8


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.booleans()), max_size=40))
def test_mixed_sources_never_accept_a_counter_twice(
        events: list[tuple[int, bool, bool]]) -> None:
    """Radio frames and polled readings of one device: accepted counters strictly increase."""
    p = make(window=0.0)
    accepted: list[int] = []
    for i, (fcnt, alt, modbus) in enumerate(events):
        if modbus:
            verdict = submit_polled(p, polled(fcnt, values={**MB_VALUES, "index": 2 if alt
                                                            else 1}), at=float(i))
        else:
            verdict = p.submit(rx(water(fcnt, index=2 if alt else 1), at=float(i)))
        if verdict.status == "pending":
            accepted.append(fcnt)
        p.due(float(i))
    assert accepted == sorted(set(accepted))

"""Pipeline.decide (the written-out common case) decides exactly as the general route.

Two pipelines get the same receptions: one through ``submit`` (which asks
``decide`` first), one through ``_submit_general`` alone. Every verdict (status,
reason, device, counter, detail), the counters, the replay state and the frames
waiting in the dedup window must be the same, over sequences that mix valid
frames at rising, equal and falling counters, copies, mutated and random bytes,
unknown devices, a device registered under another kind, malformed payloads
sealed with the right key and a pending key rotation.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import pipeline as pl
from knute.gateway.pipeline_checks import DUPLICATE, REPLAY
from knute.gateway.registry import Device
from knute.protocol import ccm, frame
from knute.tools.sim.typical import TYPICAL

KEYS = {1: bytes(range(16)), 2: bytes(range(1, 17)), 3: bytes(range(2, 18))}
NEXT_KEY = bytes(range(3, 19))
KINDS = {1: "water_meter", 2: "air_quality", 3: "air_quality"}
REGISTERED = {1: "water_meter", 2: "air_quality", 3: "water_meter"}   # 3: kind mismatch


def sealed(dev: int, fcnt: int, plain: bytes, key: bytes) -> bytes:
    """A frame of device ``dev`` whose payload is ``plain`` (any bytes), sealed with ``key``."""
    kind_id = 1 if KINDS[dev] == "water_meter" else 2
    header = bytes([0x40 | kind_id]) + dev.to_bytes(4, "big") + fcnt.to_bytes(3, "big")
    body = ccm.seal(ccm.aes_block(key), frame.nonce(dev, fcnt), header, plain, 4)
    return header + body


@st.composite
def reception(draw: Any) -> bytes:
    """One frame: mostly valid ones, some hostile."""
    case = draw(st.sampled_from(["valid", "valid", "valid", "next_key", "mutated", "random",
                                 "unknown", "payload", "tag8"]))
    dev = draw(st.sampled_from([1, 2, 3]))
    fcnt = draw(st.integers(0, 24))
    if case == "random":
        return bytes(draw(st.binary(max_size=40)))
    if case == "unknown":
        return frame.encode("water_meter", 99, fcnt, TYPICAL["water_meter"], KEYS[1])
    if case == "payload":
        plain = draw(st.sampled_from([b"\x85\x18\x05\x00\x00\x00\x81\x00", b"\x80", b"\xa0",
                                      b"\x9f\x00\xff", b"\x85\x19\x00\x05\x00\x00\x00\x80"]))
        return sealed(dev, fcnt, plain, KEYS[dev])
    key = NEXT_KEY if case == "next_key" else KEYS[dev]
    values = dict(TYPICAL[KINDS[dev]])
    if draw(st.booleans()):
        first = next(iter(values))
        values[first] = draw(st.integers(0, 200))
    buf = frame.encode(KINDS[dev], dev, fcnt, values, key, 8 if case == "tag8" else 4)
    if case == "mutated":
        bad = bytearray(buf)
        bad[draw(st.integers(0, len(bad) - 1))] ^= draw(st.integers(1, 255))
        if draw(st.booleans()):
            bad = bad[:draw(st.integers(0, len(bad)))]
        return bytes(bad)
    return buf


def pair(next_keys: bool, python_decoders: bool = False) -> tuple[pl.Pipeline, pl.Pipeline]:
    """(the pipeline whose ``submit`` decides, the one whose general route is the
    reference); ``python_decoders``: the first runs the Python payload walk even where
    the compiled one is built."""
    devices = {dev: Device(dev, kind, KEYS[dev]) for dev, kind in REGISTERED.items()}
    out = (pl.Pipeline(devices, python_decoders=python_decoders), pl.Pipeline(devices))
    if next_keys:
        for p in out:
            p.next_keys[1] = NEXT_KEY
    return out


def state(p: pl.Pipeline) -> Any:
    waiting = [(slot, r.decoded, r.raw, r.digest, len(r.receptions), r.under_next_key)
               for slot, r in p._window.items()]
    counters = p.counters
    return (waiting, dict(counters._totals), dict(counters._rejected),
            {d: p.replay.last(d) for d in KEYS})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(reception(), st.integers(0, 3)), max_size=30), st.booleans(),
       st.booleans())
def test_submit_decides_as_the_general_route(events: list[tuple[bytes, int]],
                                             next_keys: bool, python_decoders: bool) -> None:
    fast, general = pair(next_keys, python_decoders)
    at = 0.0
    for buf, step in events:
        at += step * 0.1                       # 0..0.3 s apart: some copies within the window
        verdicts = []
        for p, submit in ((fast, fast.submit), (general, general._submit_general)):
            verdicts.append(submit(pl.Reception("s1", "radio", buf, 0.0, at, {"rssi_dbm": -90})))
            p.due(at)
        assert verdicts[0] == verdicts[1], buf.hex()
        assert state(fast) == state(general)


def test_decide_accepts_and_rejects_without_the_general_route() -> None:
    # The common cases are decided in decide itself (None would mean the general route).
    fast, _ = pair(False)
    first = frame.encode("water_meter", 1, 5, TYPICAL["water_meter"], KEYS[1])
    decided = fast.decide(first)
    assert isinstance(decided, dict) and decided == frame.decode(first, KEYS[1])
    assert fast.decide(first) == pl.Rejection(DUPLICATE, 1, 5, None)
    older = frame.encode("water_meter", 1, 4, TYPICAL["water_meter"], KEYS[1])
    assert fast.decide(older) == pl.Rejection(REPLAY, 1, 4, "last accepted 5")
    bad = bytearray(frame.encode("water_meter", 1, 6, TYPICAL["water_meter"], KEYS[1]))
    bad[-1] ^= 1
    assert fast.decide(bytes(bad)) == pl.Rejection("frame_tag", 1, 6, None)
    mismatch = frame.encode("air_quality", 3, 1, TYPICAL["air_quality"], KEYS[3])
    assert fast.decide(mismatch) == pl.Rejection(
        pl.KIND_MISMATCH, 3, 1, "frame says air_quality, registered as water_meter")
    assert fast.decide(b"\x00" * 3) is None               # the general route's header reason


def test_decide_leaves_a_copy_in_the_window_to_the_general_route() -> None:
    fast, _ = pair(False)
    buf = frame.encode("water_meter", 1, 5, TYPICAL["water_meter"], KEYS[1])
    assert fast.submit(pl.Reception("s1", "radio", buf, 0.0, 0.0, {})).status == "pending"
    assert fast.decide(buf) is None
    assert fast.submit(pl.Reception("s2", "radio", buf, 0.0, 0.1, {})).status == "merged"

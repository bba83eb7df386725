"""Pipeline.decide's per-device entry (control byte, cipher, decoder) follows the registry.

``decide`` caches, per device, what a frame of its registered kind with a 4-byte
tag needs. A registry change (a new key, another kind, a device removed or
added) must be seen by the very next frame: the same receptions, with registry
changes between them, get the same verdicts through ``submit`` as through the
general route alone.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import pipeline as pl
from knute.gateway.registry import Device
from knute.protocol import frame
from knute.tools.sim.typical import TYPICAL
from tests.gateway.test_pipeline_decide import KEYS, NEXT_KEY, reception, state

KIND_OF = {1: "water_meter", 2: "air_quality", 3: "air_quality"}
# Registries the test switches between: the first as test_pipeline_decide's, then
# device 1 under its next key, device 3 under its own kind, device 2 gone.
REGISTRIES: list[dict[int, Device]] = [
    {1: Device(1, "water_meter", KEYS[1]), 2: Device(2, "air_quality", KEYS[2]),
     3: Device(3, "water_meter", KEYS[3])},
    {1: Device(1, "water_meter", NEXT_KEY), 2: Device(2, "air_quality", KEYS[2]),
     3: Device(3, "air_quality", KEYS[3])},
    {1: Device(1, "water_meter", KEYS[1]), 3: Device(3, "air_quality", KEYS[3])},
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(reception(), st.integers(0, 3)),
                          st.sampled_from(range(len(REGISTRIES)))), max_size=30))
def test_registry_changes_reach_the_next_frame(events: list[Any]) -> None:
    fast, general = pl.Pipeline(REGISTRIES[0]), pl.Pipeline(REGISTRIES[0])
    at = 0.0
    for event in events:
        if isinstance(event, int):
            fast.update_devices(REGISTRIES[event])
            general.update_devices(REGISTRIES[event])
            continue
        buf, step = event
        at += step * 0.1
        verdicts = []
        for p, submit in ((fast, fast.submit), (general, general._submit_general)):
            verdicts.append(submit(pl.Reception("s1", "radio", buf, 0.0, at, {})))
            p.due(at)
        assert verdicts[0] == verdicts[1], buf.hex()
        assert state(fast) == state(general)


def test_a_new_key_a_new_kind_and_a_removed_device_after_a_cached_frame() -> None:
    p = pl.Pipeline(REGISTRIES[0])
    water = frame.encode("water_meter", 1, 1, TYPICAL["water_meter"], KEYS[1])
    air = frame.encode("air_quality", 2, 1, TYPICAL["air_quality"], KEYS[2])
    assert isinstance(p.decide(water), dict) and isinstance(p.decide(air), dict)
    assert set(p._fast) == {1, 2}                  # both entries cached
    p.update_devices(REGISTRIES[1])
    # The old key no longer opens device 1's frames, the new one does.
    old_key = frame.encode("water_meter", 1, 2, TYPICAL["water_meter"], KEYS[1])
    assert p.decide(old_key) == pl.Rejection("frame_tag", 1, 2, None)
    new_key = frame.encode("water_meter", 1, 3, TYPICAL["water_meter"], NEXT_KEY)
    assert p.decide(new_key) == frame.decode(new_key, NEXT_KEY)
    # Device 3 registered as air quality now: its air frames are accepted.
    air3 = frame.encode("air_quality", 3, 1, TYPICAL["air_quality"], KEYS[3])
    assert p.decide(air3) == frame.decode(air3, KEYS[3])
    p.update_devices(REGISTRIES[2])
    air2 = frame.encode("air_quality", 2, 2, TYPICAL["air_quality"], KEYS[2])
    assert p.decide(air2) == pl.Rejection(pl.UNKNOWN_DEVICE, 2, 2, None)


def test_a_long_tag_or_another_kind_is_decided_without_being_cached() -> None:
    p = pl.Pipeline(REGISTRIES[0])
    long_tag = frame.encode("water_meter", 1, 1, TYPICAL["water_meter"], KEYS[1], 8)
    assert p.decide(long_tag) == frame.decode(long_tag, KEYS[1])
    mismatch = frame.encode("air_quality", 3, 1, TYPICAL["air_quality"], KEYS[3])
    assert p.decide(mismatch) == pl.Rejection(
        pl.KIND_MISMATCH, 3, 1, "frame says air_quality, registered as water_meter")
    assert p._fast == {}
    short_tag = frame.encode("water_meter", 1, 2, TYPICAL["water_meter"], KEYS[1])
    assert p.decide(short_tag) == frame.decode(short_tag, KEYS[1])
    assert list(p._fast) == [1]

"""The simulated fleet: frames are real, values follow the models, faults are as labelled."""

from __future__ import annotations

from typing import Any

import pytest

from knute.protocol import frame
from knute.protocol.errors import FrameError
from knute.tools.sim.fleet import HOUR, Fleet, MeterNode

START = 1_790_000_000.0


def _decode(fleet: Fleet, raw: bytes) -> dict[str, Any]:
    keys = {n.device_id: n.key for n in fleet.nodes}
    device_id = frame.parse_header(raw)[1]
    return frame.decode(raw, keys[device_id])


def test_same_seed_same_frames() -> None:
    a = Fleet(5, 2, start=START, seed=7)
    b = Fleet(5, 2, start=START, seed=7)
    end = START + 2 * 24 * HOUR
    assert [t.payload for t in a.due(end)] == [t.payload for t in b.due(end)]


def test_meter_frames_decode_and_index_grows_by_the_profile() -> None:
    fleet = Fleet(20, 0, start=START, seed=3)
    last: dict[int, dict[str, Any]] = {}
    for tx in fleet.due(START + 7 * 24 * HOUR):
        got = _decode(fleet, tx.payload)
        values = got["values"]
        assert len(values["profile"]) == 6
        prev = last.get(got["device_id"])
        if prev is not None:
            # Four frames a day, six hours each: the index grows by exactly the profile.
            assert values["index"] - prev["index"] == sum(values["profile"])
            assert (values["profile_end_h"] - prev["profile_end_h"]) % 256 == 6
            assert got["fcnt"] == prev["fcnt"] + 1
        values["fcnt"] = got["fcnt"]
        last[got["device_id"]] = values
    assert len(last) == 20


def test_household_use_is_higher_in_the_evening_than_at_night() -> None:
    fleet = Fleet(60, 0, start=START, seed=5)
    night = evening = 0
    for node in fleet.nodes:
        assert isinstance(node, MeterNode)
        node.advance(START + 14 * 24 * HOUR, fleet.rng)
        history = list(node.history)
        # history ends at a full hour; index by hour of day via hour_mark
        for back, litres in enumerate(reversed(history)):
            hour = int((node.hour_mark - (back + 1) * HOUR) // HOUR) % 24
            if hour in (2, 3):
                night += litres
            elif hour in (18, 19):
                evening += litres
    assert evening > 5 * night


def test_leak_raises_the_leak_alarm_within_a_day() -> None:
    fleet = Fleet(1, 0, start=START, seed=11)
    node = fleet.nodes[0]
    assert isinstance(node, MeterNode)
    node.household.leak_lph = 5.0
    alarms = [(_decode(fleet, tx.payload)["values"]["alarms"], tx.payload)
              for tx in fleet.due(START + 3 * 24 * HOUR)]
    assert alarms[-1][0] & 1, "leak bit after two days of trickle"
    assert "max_flow" in _decode(fleet, alarms[-1][1])["values"]


def test_air_frames_are_in_range_and_a_failed_sensor_sends_nulls() -> None:
    fleet = Fleet(0, 3, start=START, seed=2, faults=("sensor",), fault_rate=1.0)
    txs = fleet.due(START + 6 * HOUR)
    assert txs
    values = [_decode(fleet, tx.payload)["values"] for tx in txs]
    assert all(v["pm2_5"] is None and v["status"] & 1 for v in values)
    clean = Fleet(0, 3, start=START, seed=2)
    for tx in clean.due(START + 6 * HOUR):
        v = _decode(clean, tx.payload)["values"]
        assert 0 < v["pm2_5"] < 2000 and 960_0 <= v["pressure"] <= 1045_0


@pytest.mark.parametrize("fault", ["garbage", "truncated", "replay", "reset"])
def test_invalid_transmissions_are_rejected_and_valid_ones_accepted(fault: str) -> None:
    fleet = Fleet(5, 2, start=START, seed=9, faults=(fault,), fault_rate=0.3)
    last: dict[int, int] = {}
    accepted = 0
    for tx in fleet.due(START + 3 * 24 * HOUR):
        try:
            got = _decode(fleet, tx.payload) if tx.node is not None else None
        except (FrameError, KeyError):
            got = None
        ok = got is not None and got["fcnt"] > last.get(got["device_id"], -1)
        if ok:
            assert got is not None
            last[got["device_id"]] = got["fcnt"]
            accepted += 1
        # A gateway with per-device counters accepts exactly what the fleet marks valid.
        assert ok == tx.valid, (fault, tx.fault)
    assert fleet.injected[fault] > 0
    assert accepted > 0


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fleet(1, 0, start=START, faults=("meteor",))

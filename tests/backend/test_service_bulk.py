"""A district's bulk meters get no household flow rule; the same hours on a household do.

Both meters below send the same three days of hours: a steady 300 L/h with
one hour of 2,500 L, the node's own ``leak`` and ``burst`` alarms, then a
``tamper``. On the household that is a leak, a burst and a tamper; on the
district's inlet it is the district's ordinary flow, and only the tamper
(and index rules) apply. Both stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knute.backend.config import Config, District
from knute.backend.service import HOUSEHOLD_ONLY, Backend
from tests.backend.conftest import StoreFactory
from tests.backend.factory import HOUR_S, T0, reading, topic
from tests.backend.test_service_leaks import Published

INLET, OUTLET, HOUSE = "b0000001", "b0000002", "00000001"


def _send_three_days(core: Backend, device: str) -> None:
    flow = [300.0] * 72
    flow[30] = 2500.0
    for i in range(12):
        alarms = ("leak", "burst") if i < 11 else ("leak", "tamper")
        doc = reading(device, i + 1, T0 + (i + 1) * 6 * HOUR_S, flow[6 * i:6 * i + 6],
                      sum(flow[:6 * i + 6]), alarms=alarms)
        assert core.handle(topic(doc), json.dumps(doc).encode()) == "stored"


@pytest.mark.parametrize("bulk", [INLET, OUTLET])
def test_bulk_meters_get_no_household_flow_rule(tmp_path: Path, store_factory: StoreFactory,
                                                bulk: str) -> None:
    config = Config(path=tmp_path / "backend.toml",
                    districts=(District("sentrum", (INLET,), (OUTLET,), (HOUSE,), 1),))
    published = Published()
    core = Backend(config, store_factory.new(), published)
    _send_three_days(core, HOUSE)
    _send_three_days(core, bulk)
    opened = {(d["alert"], d["subject"]) for _, d in published.messages
              if d["state"] == "open"}
    # The household: every flow rule opens on these hours (so the bulk's silence means something).
    assert {(name, HOUSE) for name in HOUSEHOLD_ONLY} <= opened, opened
    assert ("alarm_tamper", HOUSE) in opened
    # The bulk meter: none of them, but its tamper alarm, as any meter's.
    assert {a for a, s in opened if s == bulk} == {"alarm_tamper"}, opened
    assert all(core.store.alert(f"{name}/{bulk}") is None for name in HOUSEHOLD_ONLY)

"""``SqlStore.payloads``: the air index's read, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json

from knute.backend.store import SqlStore
from knute.tools.sim.air_episode import episode
from tests.backend.factory import HOUR_S, T0


def test_payloads_are_the_device_s_readings_in_time_order(store: SqlStore) -> None:
    docs = [doc for _, doc in episode(("00002001", "00002002"), 2, T0)]
    for doc in reversed(docs):                  # stored newest first
        store.add_reading(doc)
    got = store.payloads("00002001", T0 + HOUR_S, T0 + 2 * HOUR_S)
    assert [t for t, _ in got] == [T0 + HOUR_S + k * 600 + 1.5 for k in range(6)]
    assert {json.loads(p)["device"] for _, p in got} == {"00002001"}
    assert store.payloads("00002001", T0 + 2 * HOUR_S, T0 + 3 * HOUR_S) == []

"""The same queries on both stores: series, balances, night flow, retention, concurrency.

Every test runs on SQLite and on PostgreSQL (the ``store`` fixture). The
aggregate queries are held equal to the pure rules in ``backend.analytics``.
"""

from __future__ import annotations

import itertools
import threading
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings

from knute.backend import analytics, queries
from knute.backend.config import District
from knute.backend.hours import HOUR_S, MeterReading, rebuild
from knute.backend.store import DAY_S, Retention, SqlStore
from tests.backend.conftest import StoreFactory
from tests.backend.factory import T0, reading, utc
from tests.backend.test_hours_property import meter_history

OSLO = ZoneInfo("Europe/Oslo")
_devices = itertools.count(1)


def doc_of(device: str, r: MeterReading) -> dict[str, Any]:
    """A reading document carrying exactly ``r``'s slots and index."""
    return {"id": f"{device}:{r.id}", "device": device, "kind": "water_meter", "fcnt": 1,
            "received_at": utc(r.received_at),
            "readings": {} if r.index_l is None else {"index": {"value": r.index_l,
                                                                "unit": "L"}},
            "alarms": [], "profile": [{"start": utc(s.start, False),
                                       "end": utc(s.start + HOUR_S, False),
                                       "litres": s.litres} for s in r.slots]}


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=meter_history())
def test_the_stored_series_equals_a_full_rebuild_in_any_arrival_order(
        store: SqlStore, history: tuple[list[int], list[MeterReading]]) -> None:
    _, readings = history
    device = f"{next(_devices):08x}"
    for r in readings:
        store.add_reading(doc_of(device, r))
    full = rebuild(store.readings_of(device))
    assert {h.start: h for h in store.hours(device)} == full.hours
    assert store.index_steps(device) == [(s.at, s.before_l, s.after_l)
                                         for s in sorted(full.steps, key=lambda s: s.at)]


def test_the_same_reading_from_two_consumers_at_once_is_stored_once(
        store_factory: StoreFactory) -> None:
    first = store_factory.new()
    second = store_factory.reopen(first)
    doc = reading("00000001", 10, T0 + 6 * HOUR_S, [1, 2, 3, 4, 5, 6], 21)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def consume(store: SqlStore) -> None:
        barrier.wait()
        outcomes.append(store.add_reading(doc))

    threads = [threading.Thread(target=consume, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["duplicate", "stored"]
    assert first.count_readings() == 1
    assert sum(h.litres for h in second.hours("00000001")) == 21


def _district(store: SqlStore, households: int, hours: int) -> District:
    """A district with one inlet and ``households`` meters sending 6-hour profiles.

    Household k uses k % 5 litres an hour; meter 3 misses the reading of hours 24-29
    (its hours there are estimated from the index), meter 4 never sends.
    """
    homes = [f"{0x100 + k:08x}" for k in range(households)]
    inlet = "1000a001"
    for end in range(6, hours + 1, 6):
        use = [40.0 + (h % 24) for h in range(end - 6, end)]
        store.add_reading(reading(inlet, end, T0 + end * HOUR_S, use,
                                  sum(40.0 + (h % 24) for h in range(end))))
        for k, home in enumerate(homes):
            if k == 4 or (k == 3 and end == 30):
                continue
            store.add_reading(reading(home, end, T0 + end * HOUR_S, [float(k % 5)] * 6,
                                      float(k % 5 * end)))
    return District("sentrum", (inlet,), (), tuple(homes), households)


def test_district_balances_from_the_database_equal_the_rule_meter_by_meter(
        store: SqlStore) -> None:
    district = _district(store, 8, 48)
    got = queries.district_balances(store, district, T0, T0 + 48 * HOUR_S)
    series = {d: {h.start: h for h in store.hours(d)}
              for d in (*district.inflow, *district.households)}
    want = [analytics.district_balance(
        h, [series[d].get(h) for d in district.inflow], [],
        [series[d].get(h) for d in district.households])
        for h in range(T0, T0 + 48 * HOUR_S, HOUR_S)]
    assert got == want
    assert got[26].estimated == pytest.approx(1 / 8) and got[26].missing == pytest.approx(1 / 8)
    assert not any(b.complete for b in got)            # meter 4 never sent


def test_daily_balances_sum_the_local_days_hours(store: SqlStore) -> None:
    district = _district(store, 5, 96)
    days = queries.daily_balances(store, district, date(2026, 1, 5), 3, OSLO)
    hourly = queries.district_balances(store, district, T0 - HOUR_S, T0 + 96 * HOUR_S)
    # 2026-01-05 in Oslo starts at 23:00 UTC the day before: its first hour is missing.
    assert [d.hours for d in days] == [24, 24, 24]
    assert days[0].loss_l is None and days[0].inflow_l is None
    second = [b for b in hourly if T0 + 23 * HOUR_S <= b.hour < T0 + 47 * HOUR_S]
    assert days[1].loss_l == pytest.approx(sum(b.loss_l or 0 for b in second))
    assert days[1].households_l == sum(b.households_l for b in second)
    assert days[1].missing == pytest.approx(1 / 5)


def test_the_night_flow_pass_equals_the_per_meter_rule(store: SqlStore) -> None:
    _district(store, 6, 72)
    got = queries.night_flows(store, date(2026, 1, 6), OSLO)
    for device in got:
        nights = {n.night: n.min_l_h for n in analytics.nights(store.hours(device), OSLO)}
        assert got[device] == nights[date(2026, 1, 6)], device
    assert got["00000101"] == 1.0
    assert got["00000103"] is None                      # its night hours are estimated


def test_retention_drops_readings_downsamples_hours_and_keeps_the_litres(
        store: SqlStore) -> None:
    for end in range(6, 40 * 24 + 1, 6):
        store.add_reading(reading("00000001", end, T0 + end * HOUR_S, [2.0] * 6, 2.0 * end))
    total = sum(h.litres for h in store.hours("00000001"))
    now = T0 + 40 * DAY_S
    done = store.apply_retention(now, Retention(5, 20, 0, ZoneInfo("UTC")))
    assert done["readings"] == 35 * 4 - 1 and store.count_readings() == 5 * 4 + 1
    hours = store.hours("00000001")
    assert hours[0].start == T0 + 20 * DAY_S
    days = store.days("00000001")
    assert [d[0] for d in days] == [T0 + k * DAY_S for k in range(20)]
    assert all(d[1:] == (48.0, 24, 0) for d in days)
    assert sum(h.litres for h in hours) + sum(d[1] for d in days) == total
    # A reading received before the cut is refused and counted; newer ones go on
    # filling the series from the anchors retention kept.
    assert store.add_reading(reading("00000001", 1, T0 + 6 * HOUR_S, [9.0], 1e6,
                                     id_="x")) == "expired"
    end = 40 * 24 + 12
    store.add_reading(reading("00000001", end, T0 + end * HOUR_S, [2.0], 2.0 * end))
    assert [h.quality for h in store.hours("00000001", T0 + 40 * DAY_S)] == (
        ["estimated"] * 11 + ["measured"])
    assert store.counters()["expired"] == 1
    # Daily totals go after daily_days; running it again changes nothing more.
    assert store.apply_retention(now + DAY_S, Retention(5, 20, 25, ZoneInfo("UTC")))[
        "days"] == 16
    assert len(store.days("00000001")) == 5


def test_retention_is_remembered_by_a_reopened_store(store_factory: StoreFactory) -> None:
    store = store_factory.new()
    store.add_reading(reading("00000001", 1, T0 + 6 * HOUR_S, [1.0] * 6, 6.0))
    store.apply_retention(T0 + 62 * DAY_S, Retention(30, 60, 0, OSLO))
    again = store_factory.reopen(store)
    assert again.add_reading(reading("00000001", 2, T0 + 12 * HOUR_S, [1.0] * 6,
                                     12.0)) == "expired"
    assert again.hours("00000001") == [] and len(again.days("00000001")) == 1

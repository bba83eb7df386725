"""The leak signals, each against a hand-computed case."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from knute.backend import analytics
from knute.backend.hours import ESTIMATED, INDEX, MEASURED, Hour
from tests.backend.factory import HOUR_S, T0

OSLO = ZoneInfo("Europe/Oslo")


def series(litres: Sequence[float], start: int = T0, quality: str = MEASURED) -> list[Hour]:
    return [Hour(start + i * HOUR_S, v, quality) for i, v in enumerate(litres)]


def test_continuous_flow_needs_24_hours_without_a_zero() -> None:
    leaking = series([3] * 24 + [0] + [2] * 23)
    runs = analytics.continuous_flow(leaking)
    assert [(r.hours[0].start, r.length) for r in runs] == [(T0, 24)]
    assert analytics.continuous_flow(series([3] * 23)) == []


def test_an_estimated_or_missing_hour_breaks_a_flow_run() -> None:
    hours = [*series([3] * 12), Hour(T0 + 12 * HOUR_S, 3, ESTIMATED),
             *series([3] * 12, T0 + 13 * HOUR_S)]
    assert analytics.continuous_flow(hours) == []
    gap = series([3] * 12) + series([3] * 12, T0 + 13 * HOUR_S)        # hour 12 missing
    assert analytics.continuous_flow(gap) == []
    exact = [*series([3] * 12), Hour(T0 + 12 * HOUR_S, 3, INDEX),
             *series([3] * 11, T0 + 13 * HOUR_S)]
    assert [r.length for r in analytics.continuous_flow(exact)] == [24]


def test_run_length_by_hour_counts_up_and_resets() -> None:
    hours = series([1, 1, 0, 2]) + series([5], T0 + 5 * HOUR_S)
    assert [n for _, n in analytics.run_length_by_hour(hours)] == [1, 2, 0, 1, 1]


def test_night_flow_uses_local_02_to_04() -> None:
    # T0 is 2026-01-05 00:00 UTC = 01:00 in Oslo (CET, UTC+1): local 02:00 and 03:00
    # are the UTC hours 01 and 02 (indexes 1 and 2 below).
    day = [0, 30, 25, 0] + [5] * 20
    [night] = analytics.nights(series(day), OSLO)
    assert night.night == date(2026, 1, 5)
    assert [h.start for h in night.hours] == [T0 + HOUR_S, T0 + 2 * HOUR_S]
    assert night.min_l_h == 25
    assert analytics.night_flow(series(day), OSLO, threshold_l_h=20) == [night]
    assert analytics.night_flow(series(day), OSLO, threshold_l_h=25) == []


def test_a_night_with_a_missing_hour_has_no_minimum() -> None:
    hours = series([0, 30]) + series([0], T0 + 3 * HOUR_S)
    [night] = analytics.nights(hours, OSLO)
    assert night.min_l_h is None and analytics.night_flow(hours, OSLO, 1) == []


def test_the_spring_dst_night_has_one_hour_in_the_window() -> None:
    # 2026-03-29: Oslo jumps 02:00 → 03:00 (01:00 UTC), so only 03:00 local exists.
    start = int(date(2026, 3, 29).toordinal() - date(1970, 1, 1).toordinal()) * 86400
    hours = series([7] * 6, start - 2 * HOUR_S)
    [night] = analytics.nights(hours, OSLO)
    assert len(night.hours) == 1 and night.min_l_h == 7


def test_district_balance_with_shares() -> None:
    h = T0
    inflow = [Hour(h, 1000, MEASURED)]
    outflow = [Hour(h, 200, MEASURED)]
    homes = [Hour(h, 100, MEASURED), Hour(h, 50, INDEX), Hour(h, 30, ESTIMATED), None]
    b = analytics.district_balance(h, inflow, outflow, homes)
    assert (b.inflow_l, b.outflow_l, b.households_l, b.loss_l) == (1000, 200, 180, 620)
    assert (b.measured, b.estimated, b.missing) == (0.5, 0.25, 0.25)
    assert not b.complete
    whole = analytics.district_balance(h, inflow, [], homes[:2])
    assert whole.loss_l == 850 and whole.complete


def test_a_missing_bulk_hour_leaves_the_loss_unknown() -> None:
    b = analytics.district_balance(T0, [None], [], [Hour(T0, 10, MEASURED)])
    assert b.loss_l is None and not b.complete


def test_minimum_night_flow_minus_the_allowance() -> None:
    # Net inflow per night hour 400 and 310 L/h; 100 properties × 1.7 L/h = 170 L/h.
    balances = [analytics.district_balance(T0 + i * HOUR_S, [Hour(T0 + i * HOUR_S, q, MEASURED)],
                                           [Hour(T0 + i * HOUR_S, 50, MEASURED)], [])
                for i, q in enumerate((450, 360))]
    leak = analytics.mnf_leakage(date(2026, 1, 5), balances, properties=100)
    assert leak is not None
    assert (leak.mnf_l_h, leak.hour) == (310, T0 + HOUR_S)
    assert leak.allowance_l_h == pytest.approx(170)
    assert leak.leakage_l_h == pytest.approx(140)


def test_silent_meters_after_n_expected_intervals() -> None:
    now = T0 + 100_000.0
    heard = {"00000001": now - 3 * 21600 - 1, "00000002": now - 3 * 21600, "00000003": now}
    assert analytics.silent_meters(heard, now, 21600, 3) == {"00000001": 3 * 21600 + 1}


def test_index_backwards_in_time_order() -> None:
    points = [(3.0, 90.0), (1.0, 100.0), (2.0, 120.0), (4.0, 95.0)]
    assert analytics.index_backwards(points) == [(3.0, 120.0, 90.0)]

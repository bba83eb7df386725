"""The signals of backend/leaks.py, each against a hand-computed case."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from knute.backend import analytics, leaks
from knute.backend.analytics import Balance, NightLeakage
from knute.backend.hours import ESTIMATED, MEASURED, Hour
from tests.backend.factory import HOUR_S, T0

OSLO = ZoneInfo("Europe/Oslo")


def series(litres: Sequence[float], start: int = T0, quality: str = MEASURED) -> list[Hour]:
    return [Hour(start + i * HOUR_S, v, quality) for i, v in enumerate(litres)]


def test_a_burst_is_a_known_hour_above_the_firmware_burst_flow() -> None:
    hours = [*series([10, 2500, 1999]), Hour(T0 + 3 * HOUR_S, 9000, ESTIMATED)]
    assert [h.start for h in leaks.bursts(hours)] == [T0 + HOUR_S]
    assert leaks.BURST_L_H == 2000.0


def test_backflow_is_a_small_drop_of_the_index_and_a_reset_is_not() -> None:
    points = [(0.0, 5000.0), (1.0, 4990.0), (2.0, 5100.0), (3.0, 12.0), (4.0, 40.0)]
    assert analytics.index_backwards(points) == [(1.0, 5000.0, 4990.0), (3.0, 5100.0, 12.0)]
    assert leaks.backflow(points) == [(1.0, 5000.0, 4990.0)]


def test_a_steady_run_needs_every_hour_at_the_level() -> None:
    hours = series([25.0] * 5 + [19.0] + [20.0] * 3)
    lengths = [n for _, n in leaks.steady_run_by_hour(hours, 20.0)]
    assert lengths == [1, 2, 3, 4, 5, 0, 1, 2, 3]
    gap = [*series([30.0] * 2), *series([30.0], start=T0 + 3 * HOUR_S)]
    assert [n for _, n in leaks.steady_run_by_hour(gap, 20.0)] == [1, 2, 1]


def balance(hour: int, loss: float | None, missing: float = 0.0) -> Balance:
    return Balance(hour, None if loss is None else 500.0 + loss, 0.0, 500.0, loss,
                   1.0 - missing, 0.0, missing)


def night_balances(nights: int, loss: Sequence[float]) -> list[Balance]:
    # T0 is 01:00 Oslo; the window's hours are T0 + 1 h and T0 + 2 h on each day.
    return [balance(T0 + day * 86400 + h * HOUR_S, loss[day])
            for day in range(nights) for h in (1, 2)]


def test_night_losses_average_the_window_and_skip_nights_with_missing_hours() -> None:
    found = night_balances(3, [40.0, 50.0, 60.0])
    found[2] = balance(found[2].hour, 50.0, missing=0.01)       # one household missing
    got = leaks.night_losses(found, OSLO)
    assert [(n.night, n.loss_l_h) for n in got] == [(date(2026, 1, 5), 40.0),
                                                    (date(2026, 1, 7), 60.0)]


def test_a_rise_holds_its_baseline_until_the_leak_is_repaired() -> None:
    losses = [100.0, 104.0, 96.0, 100.0, 150.0, 151.0, 149.0, 150.0, 150.0, 150.0, 150.0,
              150.0, 101.0]
    nights = leaks.night_losses(night_balances(len(losses), losses), OSLO)
    rises = leaks.loss_rises(nights, share=0.05, min_l_h=5.0)
    assert [round(r.rise_l_h) for r in rises] == [0, 50, 51, 49, 50, 50, 50, 50, 50, 1]
    assert {r.baseline_l_h for r in rises} == {100.0}    # the leak never became normal
    # The level is 5 % of the night's net inflow (500 L/h + the loss), at least 5 L/h.
    assert [round(r.level_l_h, 2) for r in rises][:2] == [30.0, 32.5]
    assert [r.ratio > 1 for r in rises] == [False] + [True] * 8 + [False]
    assert leaks.rise_level(40.0, 0.05, 5.0) == 5.0


def test_mnf_trend_is_the_least_squares_slope() -> None:
    first = date(2026, 1, 5)
    values = [NightLeakage(first + timedelta(days=i), 0, 0, 10.0 + 3.0 * i, 0) for i in range(5)]
    trend = leaks.mnf_trend(values)
    assert trend is not None
    assert round(trend.slope_l_h_per_day, 6) == 3.0 and trend.latest_l_h == 22.0
    assert leaks.mnf_trend(values[:2]) is None

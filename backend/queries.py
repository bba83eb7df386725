"""District balances and the night-flow pass, computed in the database (both stores).

``analytics`` holds the rules as pure functions of hourly series; these are the
same rules as aggregate queries, for a district of thousands of meters or a
city of tens of thousands: the households' hours are summed by the database
(``SqlStore.household_totals``) instead of being read meter by meter, or read
from the district's rollup kept at ingest (``SqlStore.district_totals``). Tests
hold each equal to its pure counterpart on both stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from knute.backend.analytics import NIGHT_WINDOW, Balance, _window_hours
from knute.backend.config import District
from knute.backend.hours import HOUR_S, Hour
from knute.backend.store import SqlStore, local_days


def district_balances(store: SqlStore, district: District, start: int,
                      end: int) -> list[Balance]:
    """The hourly balances of ``district`` in [start, end) (hour starts, unix s).

    Equal to ``analytics.district_balance`` hour by hour.
    """
    start -= start % HOUR_S
    bulk: dict[str, dict[int, Hour]] = {d: {} for d in (*district.inflow, *district.outflow)}
    for device, value in store.hours_of(list(bulk), start, end):
        bulk[device][value.start] = value
    totals = store.district_totals(district.name, district.households, start, end)
    n = len(district.households)
    out = []
    for hour in range(start, end, HOUR_S):
        inflow = [bulk[d].get(hour) for d in district.inflow]
        outflow = [bulk[d].get(hour) for d in district.outflow]
        litres, known, estimated = totals.get(hour, (0.0, 0, 0))
        inflow_l = None if None in inflow else sum(h.litres for h in inflow if h)
        outflow_l = None if None in outflow else sum(h.litres for h in outflow if h)
        loss = None if inflow_l is None or outflow_l is None else inflow_l - outflow_l - litres
        bulk_known = all(h is not None and h.quality in ("measured", "index")
                         for h in (*inflow, *outflow))
        share = n or 1
        out.append(Balance(hour, inflow_l, outflow_l, litres, loss, known / share,
                           estimated / share, (n - known - estimated) / share,
                           complete=bulk_known and known == n))
    return out


@dataclass(frozen=True)
class DailyBalance:
    """A district's balance over one local day: sums of its hours.

    ``loss_l`` is None when any hour's loss is unknown (a bulk meter's hour
    missing); the shares are the mean of the hours'; ``complete`` only when
    every hour is.
    """

    day: date
    hours: int
    inflow_l: float | None
    outflow_l: float | None
    households_l: float
    loss_l: float | None
    measured: float
    estimated: float
    missing: float
    complete: bool


def daily_balances(store: SqlStore, district: District, first: date, days: int,
                   tz: ZoneInfo) -> list[DailyBalance]:
    """The balances of ``days`` local days of ``district`` from ``first`` (23-25 hours each)."""
    midday = datetime(first.year, first.month, first.day, 12, tzinfo=tz).timestamp()
    bounds = local_days(midday, days, tz)
    hourly = district_balances(store, district, bounds[0][0], bounds[-1][1])
    out = []
    for (a, b), k in zip(bounds, range(days), strict=True):
        part = [x for x in hourly if a <= x.hour < b]
        n = len(part) or 1

        def total(values: Sequence[float | None]) -> float | None:
            return None if any(v is None for v in values) else sum(v for v in values if v)

        out.append(DailyBalance(
            date.fromordinal(first.toordinal() + k), len(part),
            total([x.inflow_l for x in part]), total([x.outflow_l for x in part]),
            sum(x.households_l for x in part), total([x.loss_l for x in part]),
            sum(x.measured for x in part) / n, sum(x.estimated for x in part) / n,
            sum(x.missing for x in part) / n, all(x.complete for x in part)))
    return out


def night_window(night: date, tz: ZoneInfo,
                 window: tuple[int, int] = NIGHT_WINDOW) -> tuple[int, int, int]:
    """(first hour start, end, hours) of the local ``window`` of ``night`` in UTC seconds."""
    start = int(datetime(night.year, night.month, night.day, window[0], tzinfo=tz).timestamp())
    hours = _window_hours(night, tz, window)
    return start, start + hours * HOUR_S, hours


def night_flows(store: SqlStore, night: date, tz: ZoneInfo,
                devices: Sequence[str] | None = None) -> dict[str, float | None]:
    """device -> lowest hourly flow in ``night``'s 02:00-04:00 window (None unless all known).

    Every meter with an hour in the window (or ``devices``), as
    ``analytics.nights`` gives its ``min_l_h``, in one query for the whole city.
    """
    start, end, expected = night_window(night, tz)
    found = store.window_minimums(start, end, devices)
    return {d: (m if known == expected else None) for d, (m, known) in found.items()}

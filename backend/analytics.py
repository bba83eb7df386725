"""Leak signals as pure functions of hourly series (docs/water.md explains each rule).

Inputs are ``backend.hours.Hour`` values (hour start in unix seconds UTC,
litres, quality). Only hours known hour by hour (``measured`` or ``index``)
count as evidence for a per-meter signal; ``estimated`` and missing hours
break a run, so a signal never rests on a guessed split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from knute.backend.hours import ESTIMATED, HOUR_S, INDEX, MEASURED, Hour

KNOWN = (MEASURED, INDEX)
CONTINUOUS_FLOW_HOURS = 24
NIGHT_WINDOW = (2, 4)           # local hours [02:00, 04:00)
# Household night use per property and hour: UK Water Industry, "Managing
# Leakage", Report E "Interpreting measured night flows" (WRc, 1994): 1.7 L/prop/h.
NIGHT_USE_L_PER_PROPERTY_H = 1.7


@dataclass(frozen=True)
class Run:
    """Consecutive known hours with flow: ``hours`` oldest first."""

    hours: tuple[Hour, ...]

    @property
    def length(self) -> int:
        """Number of hours in the run."""
        return len(self.hours)


def flow_runs(hours: Iterable[Hour]) -> list[Run]:
    """Every maximal run of consecutive known hours with litres > 0."""
    runs: list[Run] = []
    current: list[Hour] = []
    for hour in sorted(hours, key=lambda h: h.start):
        flowing = hour.quality in KNOWN and hour.litres > 0
        if flowing and current and hour.start == current[-1].start + HOUR_S:
            current.append(hour)
            continue
        if current:
            runs.append(Run(tuple(current)))
        current = [hour] if flowing else []
    if current:
        runs.append(Run(tuple(current)))
    return runs


def continuous_flow(hours: Iterable[Hour], min_hours: int = CONTINUOUS_FLOW_HOURS) -> list[Run]:
    """Runs of at least ``min_hours`` known hours without a zero hour."""
    return [run for run in flow_runs(hours) if run.length >= min_hours]


def run_length_by_hour(hours: Iterable[Hour]) -> list[tuple[int, int]]:
    """(hour, length of the flow run ending at that hour) for every hour given.

    The value the continuous-flow alert follows hour by hour: 0 at a zero or
    estimated hour, and a missing hour starts a new run.
    """
    out: list[tuple[int, int]] = []
    previous: Hour | None = None
    length = 0
    for hour in sorted(hours, key=lambda h: h.start):
        flowing = hour.quality in KNOWN and hour.litres > 0
        contiguous = previous is not None and hour.start == previous.start + HOUR_S
        length = (length + 1 if contiguous else 1) if flowing else 0
        out.append((hour.start, length))
        previous = hour
    return out


@dataclass(frozen=True)
class Night:
    """The night window of one local date: its hours and lowest hourly flow."""

    night: date
    hours: tuple[Hour, ...]
    min_l_h: float | None        # None unless every hour of the window is known


def local_hour(start: int, tz: ZoneInfo) -> datetime:
    """The local wall time at which the UTC hour ``start`` begins."""
    return datetime.fromtimestamp(start, UTC).astimezone(tz)


def nights(hours: Iterable[Hour], tz: ZoneInfo,
           window: tuple[int, int] = NIGHT_WINDOW) -> list[Night]:
    """The night window (local ``window`` hours) of each local date present.

    On the spring DST night the window has one hour less; that is fine.
    """
    by_date: dict[date, list[Hour]] = {}
    for hour in hours:
        local = local_hour(hour.start, tz)
        if window[0] <= local.hour < window[1]:
            by_date.setdefault(local.date(), []).append(hour)
    out = []
    for night, found in sorted(by_date.items()):
        found.sort(key=lambda h: h.start)
        expected = _window_hours(night, tz, window)
        known = [h for h in found if h.quality in KNOWN]
        complete = len(known) == expected
        out.append(Night(night, tuple(found),
                         min(h.litres for h in known) if complete else None))
    return out


@lru_cache(maxsize=4096)
def _window_hours(night: date, tz: ZoneInfo, window: tuple[int, int]) -> int:
    """How many UTC hours start inside the local window of ``night``."""
    start = int(datetime(night.year, night.month, night.day, tzinfo=tz).timestamp())
    count = 0
    for h in range(start - 2 * HOUR_S, start + 26 * HOUR_S, HOUR_S):
        local = local_hour(h, tz)
        if local.date() == night and window[0] <= local.hour < window[1]:
            count += 1
    return count


def night_flow(hours: Iterable[Hour], tz: ZoneInfo, threshold_l_h: float,
               window: tuple[int, int] = NIGHT_WINDOW) -> list[Night]:
    """Nights whose lowest hourly flow in the window is above ``threshold_l_h``."""
    return [n for n in nights(hours, tz, window)
            if n.min_l_h is not None and n.min_l_h > threshold_l_h]


@dataclass(frozen=True)
class Balance:
    """A district's water balance for one hour.

    ``loss_l`` is inflow − outflow − Σ households; None when a bulk meter's
    hour is missing. The shares say how much of the household side rests on
    measured, estimated and missing hours (``index`` counts as measured).
    """

    hour: int
    inflow_l: float | None
    outflow_l: float | None
    households_l: float
    loss_l: float | None
    measured: float
    estimated: float
    missing: float
    complete: bool = field(default=False)


def district_balance(hour: int, inflow: Sequence[Hour | None], outflow: Sequence[Hour | None],
                     households: Sequence[Hour | None]) -> Balance:
    """inflow − outflow − Σ households for ``hour``, with the quality shares.

    A missing household hour adds nothing to Σ households (so the loss is an
    upper bound) and counts in ``missing``; the balance is ``complete`` only
    when every meter's hour is measured.
    """
    def total(meters: Sequence[Hour | None]) -> float | None:
        if any(m is None for m in meters):
            return None
        return sum(m.litres for m in meters if m is not None)

    inflow_l, outflow_l = total(inflow), total(outflow)
    measured = sum(1 for m in households if m is not None and m.quality in KNOWN)
    estimated = sum(1 for m in households if m is not None and m.quality == ESTIMATED)
    missing = sum(1 for m in households if m is None)
    n = len(households) or 1
    households_l = sum(m.litres for m in households if m is not None)
    loss = None if inflow_l is None or outflow_l is None else inflow_l - outflow_l - households_l
    bulk_known = all(m is not None and m.quality in KNOWN for m in [*inflow, *outflow])
    return Balance(hour, inflow_l, outflow_l, households_l, loss,
                   measured / n, estimated / n, missing / n,
                   complete=bulk_known and measured == len(households))


@dataclass(frozen=True)
class NightLeakage:
    """Minimum night flow of a district minus legitimate night use."""

    night: date
    mnf_l_h: float
    allowance_l_h: float
    leakage_l_h: float
    hour: int                    # the hour of the minimum


def mnf_leakage(night: date, balances: Sequence[Balance], properties: int,
                allowance_l_per_property_h: float = NIGHT_USE_L_PER_PROPERTY_H
                ) -> NightLeakage | None:
    """MNF (lowest inflow − outflow of the night window) − properties × allowance.

    ``balances`` are the district's balances of the night window's hours. None
    when a bulk meter's hour is missing in the window.
    """
    nets = []
    for b in balances:
        if b.inflow_l is None or b.outflow_l is None:
            return None
        nets.append((b.inflow_l - b.outflow_l, b.hour))
    if not nets:
        return None
    mnf, hour = min(nets)
    allowance = properties * allowance_l_per_property_h
    return NightLeakage(night, mnf, allowance, mnf - allowance, hour)


def silent_meters(last_heard: Mapping[str, float], now: float, expected_interval_s: float,
                  intervals: int) -> dict[str, float]:
    """device -> seconds since last heard, for meters silent ``intervals`` expected intervals."""
    limit = expected_interval_s * intervals
    return {device: now - t for device, t in sorted(last_heard.items()) if now - t > limit}


def index_backwards(points: Iterable[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """(time, index before, index after) wherever an index is lower than the one before.

    ``points`` are (time, index) pairs in any order; they are taken in time order.
    """
    out = []
    previous: tuple[float, float] | None = None
    for at, index in sorted(points):
        if previous is not None and index < previous[1]:
            out.append((at, previous[1], index))
        previous = (at, index)
    return out

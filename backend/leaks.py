"""More leak signals as pure functions: bursts, backflow, a district's loss rise, MNF trend.

Beside ``backend.analytics`` (continuous flow, night flow, balance, MNF), and
like it free of I/O; docs/water.md gives each rule with its threshold and
source.

- ``bursts``: known hours above a burst flow (the firmware's own ``burst_lph``).
- ``backflow``: the index went down by a little (a meter that counts reverse
  flow backwards), as against a counter reset or a replaced meter, which drop
  far further.
- ``night_losses`` and ``loss_rises``: a district's loss (inflow − outflow −
  Σ households, from every household's own meter) in the night window, and
  its rise over the district's own recent nights: a new leak in the mains
  between the bulk meter and the households.
- ``mnf_trend``: the slope of a district's MNF leakage over its recent nights.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from knute.backend.analytics import (
    KNOWN,
    NIGHT_WINDOW,
    Balance,
    NightLeakage,
    index_backwards,
    local_hour,
)
from knute.backend.hours import Hour

# The firmware's burst threshold (firmware/config.py ``burst_lph``): no
# household draws 2,000 L/h for a whole hour (a shower is 6-12 L/min, and not
# for an hour).
BURST_L_H = 2000.0
# A counter reset or a replaced meter drops the index to near zero; reverse
# flow through a meter that subtracts it (ISO 4064-1 / OIML R 49-1 allow a
# meter to either subtract reverse flow or record it apart) drops it by what
# flowed back: a few litres to a few hundred.
BACKFLOW_MAX_L = 1000.0
# A leak's flow does not stop: every hour of a day carries at least its size.
# Ordinary use does stop, but a large household can use some water in every
# hour of a day (a flush at 03:00 is 6-9 L), so the level is above a flush
# spread over an hour. Tuned on the simulated city's seed 1 (docs/water.md).
STEADY_FLOW_L_H = 20.0
STEADY_FLOW_HOURS = 24
BASELINE_NIGHTS = 7          # a district's loss is compared with its last 7 quiet nights
MIN_BASELINE_NIGHTS = 3
# ``district_loss_rise`` opens when the night loss rises above its baseline by
# more than this share of the night's net inflow (and at least the floor): a
# bulk meter's error (±2 %) applies to every litre it counts, so a change of
# the district's night demand moves the loss by up to 2 % of that change.
# Tuned on the simulated city's seed 1 (docs/water.md).
DISTRICT_RISE_SHARE = 0.03
DISTRICT_RISE_MIN_L_H = 5.0
# ``mnf_trend`` (docs/water.md, "Trend of the minimum night flow"): the slope of
# the last 14 nights' MNF leakage, once 7 nights have a value, projected over
# the nights it spans; the alert opens when that rise is above half of the
# ``district_leak`` level (50 L/h by default) on 2 nights in a row.
TREND_NIGHTS = 14
MIN_TREND_NIGHTS = 7
MNF_TREND_L_H = 50.0


def bursts(hours: Iterable[Hour], threshold_l_h: float = BURST_L_H) -> list[Hour]:
    """Known hours (``measured`` or ``index``) with more than ``threshold_l_h`` litres."""
    return sorted((h for h in hours if h.quality in KNOWN and h.litres > threshold_l_h),
                  key=lambda h: h.start)


def steady_run_by_hour(hours: Iterable[Hour], level_l_h: float = STEADY_FLOW_L_H
                       ) -> list[tuple[int, int]]:
    """(hour, length of the run of known hours at or above ``level_l_h`` ending there).

    As ``analytics.run_length_by_hour`` with a level instead of "more than
    nothing": an hour below the level, estimated or after a gap ends the run.
    """
    out: list[tuple[int, int]] = []
    previous: int | None = None
    length = 0
    for hour in sorted(hours, key=lambda h: h.start):
        steady = hour.quality in KNOWN and hour.litres >= level_l_h
        contiguous = previous is not None and hour.start == previous + 3600
        length = (length + 1 if contiguous else 1) if steady else 0
        out.append((hour.start, length))
        previous = hour.start
    return out


def backflow(points: Iterable[tuple[float, float]], max_step_l: float = BACKFLOW_MAX_L
             ) -> list[tuple[float, float, float]]:
    """(time, index before, index after) where the index went down by at most ``max_step_l``.

    ``points`` are (time, index) pairs in any order. A larger drop is a counter
    reset or a new meter (``analytics.index_backwards`` reports every drop).
    """
    return [step for step in index_backwards(points) if step[1] - step[2] <= max_step_l]


@dataclass(frozen=True)
class NightLoss:
    """A district's mean hourly loss over the night window of one local date."""

    night: date
    loss_l_h: float
    balances: tuple[Balance, ...]
    inflow_l_h: float = 0.0      # mean net inflow (inflow − outflow) over the window


def night_losses(balances: Iterable[Balance], tz: ZoneInfo,
                 window: tuple[int, int] = NIGHT_WINDOW) -> list[NightLoss]:
    """The mean loss of each night window whose every hour has a loss and no missing household.

    Estimated household hours count (their sum is exact; at night the split
    between hours moves a few litres at most); a missing one makes the loss
    an upper bound only, so that night gives no value.
    """
    by_night: dict[date, list[Balance]] = {}
    for b in balances:
        local = local_hour(b.hour, tz)
        if window[0] <= local.hour < window[1]:
            by_night.setdefault(local.date(), []).append(b)
    out = []
    for night, found in sorted(by_night.items()):
        if any(b.loss_l is None or b.missing > 0 for b in found):
            continue
        losses = [b.loss_l for b in found if b.loss_l is not None]
        nets = [(b.inflow_l or 0.0) - (b.outflow_l or 0.0) for b in found]
        out.append(NightLoss(night, sum(losses) / len(losses),
                             tuple(sorted(found, key=lambda b: b.hour)),
                             sum(nets) / len(nets)))
    return out


@dataclass(frozen=True)
class Rise:
    """One night's loss against the district's baseline (median of its recent quiet nights).

    ``level_l_h`` is the rise that counts as a new leak on that night;
    ``ratio`` is ``rise_l_h / level_l_h``, the value the alert follows.
    """

    night: date
    loss_l_h: float
    baseline_l_h: float
    rise_l_h: float
    level_l_h: float

    @property
    def ratio(self) -> float:
        """The rise in multiples of the night's level."""
        return self.rise_l_h / self.level_l_h


def rise_level(inflow_l_h: float, share: float = DISTRICT_RISE_SHARE,
               min_l_h: float = DISTRICT_RISE_MIN_L_H) -> float:
    """The rise that counts as a new leak on a night with ``inflow_l_h`` net inflow."""
    return max(min_l_h, share * inflow_l_h)


def loss_rises(losses: Sequence[NightLoss], share: float = DISTRICT_RISE_SHARE,
               min_l_h: float = DISTRICT_RISE_MIN_L_H,
               baseline_nights: int = BASELINE_NIGHTS,
               min_baseline: int = MIN_BASELINE_NIGHTS) -> list[Rise]:
    """Each night's loss minus the median of the last ``baseline_nights`` quiet nights.

    A night whose rise is above its level (``rise_level``) does not enter the
    baseline, so a leak keeps its rise until it is repaired instead of
    becoming the new normal. Nights before ``min_baseline`` quiet nights exist
    give no value.
    """
    quiet: list[float] = []
    out = []
    for n in sorted(losses, key=lambda n: n.night):
        if len(quiet) >= min_baseline:
            baseline = statistics.median(quiet[-baseline_nights:])
            rise = Rise(n.night, n.loss_l_h, baseline, n.loss_l_h - baseline,
                        rise_level(n.inflow_l_h, share, min_l_h))
            out.append(rise)
            if rise.ratio > 1.0:
                continue
        quiet.append(n.loss_l_h)
    return out


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of MNF leakage over the last nights."""

    first: date
    last: date
    nights: int
    slope_l_h_per_day: float
    latest_l_h: float

    @property
    def rise_l_h(self) -> float:
        """The slope times the days from the first night to the last: the fitted rise."""
        return self.slope_l_h_per_day * (self.last.toordinal() - self.first.toordinal())


def mnf_trend(leakages: Sequence[NightLeakage], nights: int = 14) -> Trend | None:
    """The slope (L/h per day) of the last ``nights`` MNF leakage values; None below 3 nights."""
    recent = sorted(leakages, key=lambda n: n.night)[-nights:]
    if len(recent) < 3:
        return None
    xs = [n.night.toordinal() for n in recent]
    ys = [n.leakage_l_h for n in recent]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return Trend(recent[0].night, recent[-1].night, len(recent), slope, ys[-1])

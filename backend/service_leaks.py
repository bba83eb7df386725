"""The signals of backend/leaks.py in the running service: their rules and evaluation.

Kept beside ``backend.service`` so the service only calls in: per meter
``steady_flow``, ``burst`` and ``backflow`` on each reading, per district
``district_loss_rise`` and ``mnf_trend`` on each evaluation (docs/water.md
gives each rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from knute.backend import analytics, leaks
from knute.backend.alerts import Rule
from knute.backend.hours import HOUR_S, Hour, format_hour, parse_utc

if TYPE_CHECKING:
    from knute.backend.config import Config, District
    from knute.backend.service import Backend

EVALUATE_BACK_S = 9 * 86400     # as the service: nine days of history, a week of baseline
# The trend's window of nights, and a night more: the inlet's hours read for it.
TREND_BACK_S = (leaks.TREND_NIGHTS + 1) * 86400


def leaks_rules(config: Config) -> dict[str, Rule]:
    """The alert rules of this module's signals under ``config``."""
    hours = config.continuous_flow_hours
    level = config.steady_flow_l_h
    share = config.district_rise_share
    return {
        "steady_flow": Rule(
            "steady_flow", open_above=hours - 0.5, close_below=0.5, close_after=2, unit="h",
            text=f"every hour at or above {level:g} L/h for {hours} h; closes after 2 hours "
                 "in a row below it"),
        "burst": Rule(
            "burst", open_above=config.burst_l_h, close_below=config.burst_l_h / 2,
            close_after=2, unit="L/h",
            text=f"an hour above {config.burst_l_h:g} L/h; closes after 2 hours below half "
                 "of it"),
        "backflow": Rule(
            "backflow", open_above=0.5, close_below=0.5, close_after=4,
            text=f"the index went down by at most {leaks.BACKFLOW_MAX_L:g} L (water flowed "
                 "back through the meter); closes after 4 readings without it"),
        "district_loss_rise": Rule(
            "district_loss_rise", open_above=1.0, close_below=0.5, open_after=2,
            close_after=2, unit="level",
            text=f"night loss above the median of the last {leaks.BASELINE_NIGHTS} quiet "
                 f"nights by more than {share * 100:g} % of the night's net inflow (at least "
                 f"{config.district_rise_min_l_h:g} L/h) on 2 nights in a row; closes after "
                 "2 nights below half of that"),
        "mnf_trend": Rule(
            "mnf_trend", open_above=config.mnf_trend_l_h, close_below=config.mnf_trend_l_h / 2,
            open_after=2, close_after=2, unit="L/h",
            text=f"the least-squares rise of the minimum night flow leakage over the last "
                 f"{leaks.TREND_NIGHTS} nights (at least {leaks.MIN_TREND_NIGHTS}) above "
                 f"{config.mnf_trend_l_h:g} L/h on 2 nights in a row; closes after 2 nights "
                 "below half of it"),
    }


def _evidence(hours: Sequence[Hour]) -> list[dict[str, Any]]:
    return [{"hour": format_hour(h.start), "litres": h.litres, "quality": h.quality}
            for h in hours]


def evaluate_meter_leaks(backend: Backend, device: str, hours: Sequence[Hour],
                         doc: Mapping[str, Any]) -> None:
    """Steady flow and bursts on a meter's recent ``hours``; backflow on its new reading."""
    config = backend.config
    need = config.continuous_flow_hours
    with backend._track("steady_flow", device, "meter", True) as steady:
        for i, (hour, length) in enumerate(leaks.steady_run_by_hour(hours,
                                                                    config.steady_flow_l_h)):
            if hour > steady.last:
                steady.feed(hour, length, format_hour(hour + HOUR_S),
                            partial(_evidence, hours[max(i - length + 1, i + 1 - need):i + 1]))
    with backend._track("burst", device, "meter", True) as burst:
        for h in hours:
            if h.quality in analytics.KNOWN and h.start > burst.last:
                burst.feed(h.start, h.litres, format_hour(h.start + HOUR_S),
                           partial(_evidence, [h]))
    evaluate_backflow(backend, device, doc)


def evaluate_backflow(backend: Backend, device: str, doc: Mapping[str, Any]) -> None:
    """Backflow on ``device``'s new reading ``doc`` (a small drop of its index)."""
    received = parse_utc(doc["received_at"])
    previous = backend.store.previous_received(device, received)
    # A drop found by this reading sits at one of its anchors, and its oldest
    # anchor can be the hour the previous reading ended: so from an hour before it.
    steps = [(float(h), b, a) for h, b, a in backend.store.index_steps(device)
             if (previous is None or h > previous - HOUR_S) and h <= received]
    back = leaks.backflow([(t, b) for t, b, _ in steps] + [(t + 0.5, a) for t, _, a in steps])
    with backend._track("backflow", device, "meter") as backflow:
        backflow.feed(received, float(bool(back)), str(doc["received_at"]), lambda: [
            {"hour": format_hour(int(t)), "index_before_l": b, "index_after_l": a}
            for t, b, a in back])


def _inlet_nights(backend: Backend, district: District, now: float,
                  back_s: int) -> list[analytics.Night]:
    """The nights of the last ``back_s`` seconds at the district's (first) inlet meter
    that have a minimum flow: the nights a district's night-loss rules look at."""
    inlet = backend.store.hours(district.inflow[0], int(now) - back_s, int(now))
    return [n for n in analytics.nights(inlet, backend.config.timezone) if n.min_l_h is not None]


def evaluate_district_rise(backend: Backend, district: District, now: float) -> None:
    """The district's night loss against its quiet nights, for every night not yet fed."""
    config = backend.config
    nights = _inlet_nights(backend, district, now, EVALUATE_BACK_S)
    with backend._track("district_loss_rise", district.name, "district", True) as rise_alert:
        if not nights or nights[-1].night.toordinal() <= rise_alert.last:
            return
        balances: list[analytics.Balance] = []
        for night in nights:
            balances += backend.balances(district.name, night.hours[0].start,
                                         night.hours[-1].start + HOUR_S)
        losses = leaks.night_losses(balances, config.timezone)
        ends = {n.night: n.balances[-1].hour + HOUR_S for n in losses}
        rises = leaks.loss_rises(losses, config.district_rise_share,
                                 config.district_rise_min_l_h)
        for i, rise in enumerate(rises):
            if rise.night.toordinal() <= rise_alert.last:
                continue
            shown = [{"night": r.night.isoformat(), "loss_l_h": round(r.loss_l_h, 1),
                      "baseline_l_h": round(r.baseline_l_h, 1), "rise_l_h": round(r.rise_l_h, 1),
                      "level_l_h": round(r.level_l_h, 1)} for r in rises[max(0, i - 1):i + 1]]
            rise_alert.feed(rise.night.toordinal(), rise.ratio, format_hour(ends[rise.night]),
                            partial(list, shown))


def evaluate_mnf_trend(backend: Backend, district: District, now: float) -> None:
    """The trend of the district's MNF leakage, for every night not yet fed.

    Each night's value is the rise fitted (``leaks.mnf_trend``) over the
    window of nights that ends with it; its evidence lists those nights'
    MNF, allowance and leakage, and the slope.
    """
    config = backend.config
    nights = _inlet_nights(backend, district, now, TREND_BACK_S)
    with backend._track("mnf_trend", district.name, "district", True) as trend_alert:
        if not nights or nights[-1].night.toordinal() <= trend_alert.last:
            return
        found: list[analytics.NightLeakage] = []
        ends: dict[int, int] = {}
        for night in nights:
            last = night.hours[-1].start + HOUR_S
            balances = backend.balances(district.name, night.hours[0].start, last)
            leak = analytics.mnf_leakage(night.night, balances, district.properties,
                                         config.night_use_l_per_property_h)
            if leak is not None:
                found.append(leak)
                ends[night.night.toordinal()] = last
        for i, leak in enumerate(found):
            period = leak.night.toordinal()
            if period <= trend_alert.last:
                continue
            trend = leaks.mnf_trend(found[:i + 1], leaks.TREND_NIGHTS)
            if trend is None or trend.nights < leaks.MIN_TREND_NIGHTS:
                continue
            window = found[max(0, i + 1 - leaks.TREND_NIGHTS):i + 1]
            shown = [{"night": n.night.isoformat(), "mnf_l_h": round(n.mnf_l_h, 1),
                      "allowance_l_h": round(n.allowance_l_h, 1),
                      "leakage_l_h": round(n.leakage_l_h, 1)} for n in window]
            shown.append({"slope_l_h_per_day": round(trend.slope_l_h_per_day, 2),
                          "rise_l_h": round(trend.rise_l_h, 1)})
            trend_alert.feed(period, trend.rise_l_h, format_hour(ends[period]),
                             partial(list, shown))

"""``knute bench leaks``: the leak scoreboard on a simulated city with injected leaks.

The city (tools/sim/city.py) is seeded; one household leak and one pipe leak
of each size in ``--sizes`` are injected after a week of normal use. The
city's hourly series go straight through the backend's detectors (no
processes): per household ``continuous_flow``, ``night_flow`` and ``burst``
with the service's rules, per district ``district_loss_rise`` (the rise of
the night-window balance loss over the district's own quiet nights). Each
alert is timed from when its evidence reached the backend: a household's
hours arrive with its next frame (every 6 hours), a district's night with
the last household frame after it (at most 6 hours after the window).

Figures: the share of household leaks of at least 50 L/h found within 48 h,
of district leaks of at least 1 % of the district's mean inflow found within
7 days, false alerts (an alert on a subject without an injected leak) per
district-week, median hours to detect and median relative error of the size
estimate, and all of it per leak size. The detectors were tuned on seed 1;
the default report is on seed 2 and the next ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from knute.gateway.errors import KnuteError

SIZES_L_H = (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
HOUSEHOLD_FLOOR_L_H = 50.0
HOUSEHOLD_WITHIN_H = 48.0
DISTRICT_FLOOR_SHARE = 0.01
DISTRICT_WITHIN_H = 7 * 24.0
TIMEZONE = "Europe/Oslo"
SCORED = ("steady_flow", "night_flow", "burst", "district_loss_rise")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the leak scoreboard."""
    parser.add_argument("--seed", type=int, default=2,
                        help="first city's seed (default 2; seed 1 tuned the detectors)")
    parser.add_argument("--cities", type=int, default=3,
                        help="cities to run, seeds --seed, --seed+1, ... (default 3)")
    parser.add_argument("--districts", type=int, default=8, help="districts per city (default 8)")
    parser.add_argument("--households", type=int, default=150,
                        help="households per district (default 150)")
    parser.add_argument("--days", type=int, default=28, help="simulated days (default 28)")
    parser.add_argument("--sizes", default=",".join(f"{s:g}" for s in SIZES_L_H),
                        help="leak sizes in L/h, comma-separated (default 20 to 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(frozen=True)
class Opened:
    """An alert that opened: on what, when its evidence was in, and the size it implies."""

    signal: str
    subject: str
    district: str
    hour: int                  # the end of the period that opened it (unix s)
    available: int             # when the backend had that evidence (unix s)
    size_l_h: float | None


def bench_rules(night_flow_l_h: float = 20.0, continuous_flow_hours: int = 24
                ) -> dict[str, Any]:
    """The rules the scoreboard runs: the service's per-meter rules and the district rise."""
    from knute.backend.alerts import Rule
    from knute.backend.leaks import BURST_L_H, STEADY_FLOW_HOURS

    hours = continuous_flow_hours
    return {
        "steady_flow": Rule("steady_flow", open_above=STEADY_FLOW_HOURS - 0.5,
                            close_below=0.5, close_after=2, unit="h"),
        "continuous_flow": Rule("continuous_flow", open_above=hours - 0.5, close_below=0.5,
                                close_after=2, unit="h"),
        "night_flow": Rule("night_flow", open_above=night_flow_l_h,
                           close_below=night_flow_l_h / 2, open_after=2, close_after=2,
                           unit="L/h"),
        "burst": Rule("burst", open_above=BURST_L_H, close_below=BURST_L_H / 2,
                      close_after=2, unit="L/h"),
        "district_loss_rise": Rule("district_loss_rise", open_above=1.0, close_below=0.5,
                                   open_after=2, close_after=2, unit="level"),
    }


def _feed(rule: Any, values: Sequence[tuple[int, float]],
          on_open: Callable[[int, int], None]) -> None:
    """Run (period end, value) pairs through the alert's hysteresis; call ``on_open(i, end)``."""
    from knute.backend.alerts import CLOSED, new_state, step

    state = new_state()
    for i, (end, value) in enumerate(values):
        if state["state"] == CLOSED and not state["streak"] and value <= rule.open_above:
            continue        # a no-op step (the state stays closed with no streak)
        state, change = step(state, rule, end, value, "")
        if change == "opened":
            on_open(i, end)


def _next_send(end: int, phase: int, day0: int) -> int:
    every = 6 * 3600
    k = -((day0 + phase - end) // every)
    return day0 + phase + max(0, k) * every


def household_alerts(city: Any, device: str, hours: Sequence[Any], rules: dict[str, Any],
                     tz: ZoneInfo) -> list[Opened]:
    """Every alert that opens on one household's series."""
    from knute.backend import analytics, leaks
    from knute.backend.hours import HOUR_S

    home = city.households[device]
    out: list[Opened] = []

    def opened(signal: str, end: int, size: float | None) -> None:
        out.append(Opened(signal, device, home.district, end,
                          _next_send(end, home.send_phase_s, city.start), size))

    by_start = {h.start: h for h in hours}
    for signal, lengths in (("continuous_flow", analytics.run_length_by_hour(hours)),
                            ("steady_flow", leaks.steady_run_by_hour(hours))):
        need = int(rules[signal].open_above + 0.5)

        def flow_open(i: int, end: int, lengths: list[tuple[int, int]] = lengths,
                      signal: str = signal, need: int = need) -> None:
            run = [by_start[lengths[k][0]].litres for k in range(i + 1 - need, i + 1)]
            opened(signal, end, min(run))

        _feed(rules[signal], [(h + HOUR_S, float(n)) for h, n in lengths], flow_open)
    # Only hours that can be local night hours (Oslo is UTC+1 or +2) go to ``nights``.
    night_hours = [h for h in hours if h.start // HOUR_S % 24 < 4]
    nights = [n for n in analytics.nights(night_hours, tz) if n.min_l_h is not None]
    _feed(rules["night_flow"],
          [(n.hours[-1].start + HOUR_S, float(n.min_l_h or 0)) for n in nights],
          lambda i, end: opened("night_flow", end, nights[i].min_l_h))
    known = [h for h in hours if h.quality in analytics.KNOWN]
    _feed(rules["burst"], [(h.start + HOUR_S, h.litres) for h in known],
          lambda i, end: opened("burst", end, None))
    return out


def district_alerts(city: Any, district: Any, series: dict[str, list[Any]],
                    rules: dict[str, Any], tz: ZoneInfo) -> list[Opened]:
    """Every ``district_loss_rise`` that opens on one district's balances."""
    from knute.backend import analytics, leaks
    from knute.backend.hours import HOUR_S

    index = {d: {h.start: h for h in hours} for d, hours in series.items()}
    meters_out = [district.outflow] if district.outflow else []
    balances = [analytics.district_balance(
        hour, [index[district.inflow].get(hour)], [index[m].get(hour) for m in meters_out],
        [index[d].get(hour) for d in district.households])
        for hour in range(city.start, city.start + city.days * 86400, HOUR_S)]
    rule = rules["district_loss_rise"]
    rises = leaks.loss_rises(leaks.night_losses(balances, tz))
    ends = {n.night: n.balances[-1].hour + HOUR_S
            for n in leaks.night_losses(balances, tz)}
    out: list[Opened] = []

    def opened(i: int, end: int) -> None:
        size = statistics.mean(r.rise_l_h for r in rises[max(0, i - rule.open_after + 1):i + 1])
        out.append(Opened("district_loss_rise", district.name, district.name, end,
                          end + 6 * 3600, size))

    _feed(rule, [(ends[r.night], r.ratio) for r in rises], opened)
    return out


def run_city(seed: int, districts: int, households: int, days: int,
             sizes: Sequence[float], rules: dict[str, Any]) -> tuple[Any, list[Opened]]:
    """Build one city and every alert that opens in it."""
    from knute.backend.hours import Hour
    from knute.tools.sim.city import build

    tz = ZoneInfo(TIMEZONE)
    city = build(seed, districts=districts, households=households, days=days,
                 leak_sizes_l_h=tuple(sizes))
    opened: list[Opened] = []
    for dma in city.districts:
        series: dict[str, list[Hour]] = {d: [] for d in dma.households}
        series[dma.inflow] = []
        if dma.outflow:
            series[dma.outflow] = []
        for day in range(days):
            use = {d: city.household_use(d, day) for d in dma.households}
            for d in dma.households:
                series[d].extend(Hour(v.start, v.litres, v.quality)
                                 for v in city.household_hours(d, day, use[d]))
            inlet, outlet = city.bulk_hours(dma.name, day, use)
            series[dma.inflow].extend(Hour(v.start, v.litres, v.quality) for v in inlet)
            if dma.outflow:
                series[dma.outflow].extend(Hour(v.start, v.litres, v.quality) for v in outlet)
        for d in dma.households:
            opened.extend(household_alerts(city, d, series[d], rules, tz))
        opened.extend(district_alerts(city, dma, series, rules, tz))
    return city, opened


def score(cities: Sequence[tuple[Any, list[Opened]]]) -> dict[str, Any]:
    """The scoreboard of one or more cities' alerts against their injected leaks."""
    found: list[dict[str, Any]] = []
    false: dict[str, int] = {}
    district_weeks = 0.0
    households = 0
    continuous = 0
    for city, every in cities:
        district_weeks += len(city.districts) * city.days / 7
        households += len(city.households)
        # ``continuous_flow`` (no zero hour in 24 h, the meter's own leak alarm)
        # is shown apart: it is not one of the scoreboard's leak detectors.
        continuous += sum(a.signal == "continuous_flow" for a in every)
        opened = [a for a in every if a.signal in SCORED]
        leaks = {leak.subject: leak for leak in city.leaks}
        for alert in opened:
            leak = leaks.get(alert.subject)
            if leak is None or alert.hour <= leak.start:
                false[alert.signal] = false.get(alert.signal, 0) + 1
        for leak in city.leaks:
            hits = sorted((a for a in opened if a.subject == leak.subject
                           and a.hour > leak.start), key=lambda a: a.available)
            first = hits[0] if hits else None
            floor = HOUSEHOLD_FLOOR_L_H if leak.where == "household" else \
                DISTRICT_FLOOR_SHARE * city.mean_inflow_l_h(leak.district)
            # The size as the backend would give it at the floor's deadline: the
            # latest estimate by then (a night's minimum beats a day's run).
            within = (HOUSEHOLD_WITHIN_H if leak.where == "household" else DISTRICT_WITHIN_H)
            sized_by = [a for a in hits if a.size_l_h is not None
                        and a.available <= leak.start + within * 3600]
            sized = sized_by[-1] if sized_by else next(
                (a for a in hits if a.size_l_h is not None), None)
            found.append({
                "where": leak.where, "size_l_h": leak.size_l_h, "subject": leak.subject,
                "above_floor": leak.size_l_h >= floor,
                "hours_to_detect": None if first is None
                else (first.available - leak.start) / 3600,
                "signal": None if first is None else first.signal,
                "estimate_l_h": None if sized is None else sized.size_l_h,
                "size_error": None if sized is None or sized.size_l_h is None
                else abs(sized.size_l_h - leak.size_l_h) / leak.size_l_h,
            })

    weeks = district_weeks / max(1, sum(len(c.districts) for c, _ in cities))

    def share(where: str, within: float) -> float | None:
        floor = [f for f in found if f["where"] == where and f["above_floor"]]
        if not floor:
            return None
        ok = [f for f in floor if f["hours_to_detect"] is not None
              and f["hours_to_detect"] <= within]
        return round(len(ok) / len(floor), 4)

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 3) if known else None

    by_size = []
    for size in sorted({f["size_l_h"] for f in found}):
        row: dict[str, Any] = {"size_l_h": size}
        for where in ("household", "pipe"):
            these = [f for f in found if f["where"] == where and f["size_l_h"] == size]
            if these:
                row[where] = {
                    "leaks": len(these),
                    "found": sum(f["hours_to_detect"] is not None for f in these),
                    "median_hours_to_detect": median([f["hours_to_detect"] for f in these]),
                    "median_size_error": median([f["size_error"] for f in these]),
                }
        by_size.append(row)
    return {
        "household_found_48h": share("household", HOUSEHOLD_WITHIN_H),
        "district_found_7d": share("pipe", DISTRICT_WITHIN_H),
        "false_alerts_per_district_week": round(sum(false.values()) / district_weeks, 4),
        "false_alerts_per_1000_households_week": round(
            sum(false.values()) / (households * weeks) * 1000, 4),
        "continuous_flow_alerts_per_district_week": round(continuous / district_weeks, 4),
        "median_hours_to_detect": median([f["hours_to_detect"] for f in found]),
        "median_size_error": median([f["size_error"] for f in found]),
        "leaks": len(found),
        "found": sum(f["hours_to_detect"] is not None for f in found),
        "district_weeks": round(district_weeks, 2),
        "false_alerts": dict(sorted(false.items())),
        "by_size": by_size,
    }


def _sizes(text: str) -> list[float]:
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise KnuteError(f"--sizes {text!r}: expected numbers in L/h, comma-separated") from None
    if not sizes or min(sizes) <= 0:
        raise KnuteError(f"--sizes {text!r}: at least one size, every one above 0")
    return sizes


def run(args: argparse.Namespace) -> int:
    """Run the cities, score them and print the figures."""
    sizes = _sizes(args.sizes)
    if args.cities < 1 or args.districts < 1 or args.households < 1:
        raise KnuteError("--cities, --districts and --households must be at least 1")
    if args.days < 15:
        raise KnuteError("--days must be at least 15 (a week of baseline, a week to detect)")
    rules = bench_rules()
    started = time.perf_counter()
    cities = [run_city(args.seed + k, args.districts, args.households, args.days, sizes, rules)
              for k in range(args.cities)]
    result = score(cities)
    result = {
        "seeds": [args.seed + k for k in range(args.cities)],
        "districts": args.districts, "households_per_district": args.households,
        "days": args.days, "sizes_l_h": sizes, **result,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return 0
    print(f"leak scoreboard: {len(cities)} cities x {args.districts} districts x "
          f"{args.households} households, {args.days} days, seeds {result['seeds']}")
    for key in ("household_found_48h", "district_found_7d", "false_alerts_per_district_week",
                "median_hours_to_detect", "median_size_error"):
        print(f"  {key:32} {result[key]}")
    print(f"  false alerts by signal            {result['false_alerts']}")
    print("  size L/h   household found  h to detect  size err   pipe found  h to detect  "
          "size err")
    for row in result["by_size"]:
        cells = []
        for where in ("household", "pipe"):
            r = row.get(where)
            cells.append("-" if r is None else
                         f"{r['found']}/{r['leaks']:<3} {r['median_hours_to_detect']!s:>11} "
                         f"{r['median_size_error']!s:>9}")
        print(f"  {row['size_l_h']:>8g}   {cells[0]:>32}   {cells[1]:>32}")
    print(f"  ({result['seconds']} s)")
    return 0

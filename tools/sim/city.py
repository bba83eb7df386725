"""A simulated city's water network with leaks of known size and start (pure, seeded).

The city is a set of districts (DMAs). Each district is fed through one bulk
inlet meter and may pass water on to a neighbour through a bulk outlet meter;
behind them sit households, each with its own meter. Every litre is
accounted for, hour by hour (before the meters' errors):

    inlet = outlet + Σ household use + background leakage + pipe leaks
            + unmetered operational use (mains flushing)

Household use follows a daily demand curve with a morning and an evening
peak and a small legitimate night use (see ``HOUR_WEIGHTS``); it comes in
whole litres per hour, as the firmware counts them. Two kinds of leak are
injected, each with its size in L/h and its start hour:

- ``household`` leaks sit behind a household meter (a running toilet, a
  burst pipe in the house): the household meter sees them, and so does the
  district inlet, but the district's balance (inlet − outlet − Σ households)
  does not.
- ``pipe`` leaks sit in the mains between the bulk meters and the households:
  only the bulk inlet sees them, so they show up as loss in the balance.

Meters are not perfect: each bulk meter has a fixed relative error (its
accuracy class allows about ±2 %) and a small random error per hour, and each
household meter a fixed relative error within ±2 % (the maximum permissible
error of the upper flow zone in the Measuring Instruments Directive and ISO
4064-1). Household
readings can be lost on the way (a frame never heard): the hours it carried
are then known only as their sum (``estimated``), as the backend rebuilds them
from the index.

Everything is a function of the seed: ``household_hours(device, day)`` and
``bulk_hours(district, day)`` give the same litres however often and in
whatever order they are asked, so a benchmark and ``knute simulate --city``
see the same city.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HOUR_S = 3600
DAY_S = 24 * HOUR_S

# Relative household demand per local hour (0..23), weekday and weekend. The
# shape (a low plateau 01:00-05:00, a sharp morning peak, a broad evening
# peak) follows the measured residential diurnal patterns in Blokker,
# Vreeburg and van Dijk, "Simulating residential water demand with a
# stochastic end-use model", J. Water Resour. Plann. Manage. 136(1), 2010.
# The night hours are set so that the mean use of a property between 02:00
# and 04:00 is about 1.7 L/h, the household night use of UK Water Industry
# "Managing Leakage" Report E (WRc, 1994) that backend/analytics.py allows for.
_WEEKDAY = (1.2, 0.7, 0.45, 0.45, 0.6, 1.5, 4.5, 8.0, 7.0, 5.0, 4.0, 3.8,
            4.0, 3.6, 3.2, 3.2, 4.0, 5.5, 7.0, 7.2, 6.5, 5.2, 3.6, 2.0)
_WEEKEND = (1.6, 1.0, 0.5, 0.45, 0.45, 0.7, 1.5, 3.0, 5.5, 7.5, 7.5, 6.5,
            5.5, 4.6, 4.0, 4.0, 4.5, 5.5, 6.6, 6.6, 6.0, 4.8, 3.4, 2.2)
HOUR_WEIGHTS = (tuple(w / sum(_WEEKDAY) for w in _WEEKDAY),
                tuple(w / sum(_WEEKEND) for w in _WEEKEND))
# Household use in Norway is of the order of 180 L per person and day
# (Statistics Norway, municipal water supply statistics); persons per
# household as in a Norwegian town (many single-person households).
LITRES_PER_PERSON_DAY = (140.0, 220.0)
PERSONS = (1, 1, 1, 2, 2, 2, 3, 4, 5)
UTC_OFFSET_S = 3600          # the model's local time: Central European (winter) time
LOST_FRAME_RATE = 0.01       # share of household frames (6 hours each) never heard
SEND_EVERY_S = 6 * HOUR_S    # a household meter sends 4 times a day


@dataclass(frozen=True)
class Leak:
    """An injected leak: where, how big, from when (hour start, unix s UTC)."""

    where: str                   # "household" or "pipe"
    district: str
    subject: str                 # the household's device id, or the district's name
    size_l_h: float
    start: int


@dataclass(frozen=True)
class Household:
    """One household behind its own meter."""

    device: str
    district: str
    persons: int
    litres_per_person_day: float
    send_phase_s: int            # the meter sends at phase + k × 6 h
    night_appliance: bool        # a dishwasher or washing machine on a night timer
    meter_error: float = 0.0     # the household meter's relative error (MID class: ±2 %)


@dataclass(frozen=True)
class District:
    """A district metered area: its bulk meters, households and network."""

    name: str
    inflow: str                  # bulk inlet meter id
    outflow: str | None          # bulk outlet meter id (water passed on), if any
    households: tuple[str, ...]
    background_l_h: float        # leakage present from the start (the network's age)
    passed_on_share: float       # share of the district's demand sent on through the outlet
    inflow_bias: float           # the inlet meter's fixed relative error
    outflow_bias: float


@dataclass(frozen=True)
class HourValue:
    """One meter's hour: litres and how the backend would know them."""

    start: int
    litres: float
    quality: str                 # "measured" or "estimated" (a lost frame's hours)


@dataclass
class City:
    """Districts, households and injected leaks, all derived from ``seed``."""

    seed: int
    start: int                   # first hour (unix s, UTC, a day boundary)
    days: int
    districts: list[District] = field(default_factory=list)
    households: dict[str, Household] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)

    # -- one meter, one day --------------------------------------------------

    def household_use(self, device: str, day: int) -> list[int]:
        """The 24 hourly litres through a household meter on ``day`` (0 = ``start``)."""
        home = self.households[device]
        rng = random.Random(f"{self.seed}:use:{device}:{day}")
        day_start = self.start + day * DAY_S
        weekend = _weekday(day_start + UTC_OFFSET_S) >= 5
        weights = HOUR_WEIGHTS[1 if weekend else 0]
        daily = home.persons * home.litres_per_person_day * rng.uniform(0.8, 1.2)
        leaking = any(leak.subject == device for leak in self.leaks)
        out = []
        for h in range(24):
            start = day_start + h * HOUR_S
            local = (h + UTC_OFFSET_S // HOUR_S) % 24
            mean = daily * weights[local]
            # Use comes in events (a flush is 6-9 L, a shower 40-60 L): an hour
            # with a small mean is mostly dry, one with a large mean never is.
            p_use = 1.0 - math.exp(-mean / 8.0)
            used = mean / p_use * (0.4 + 1.2 * rng.random()) if rng.random() < p_use else 0.0
            if home.night_appliance and local == 2 and rng.random() < 0.5:
                used += rng.uniform(10.0, 16.0)
            if leaking:
                used += self._leak_litres("household", device, start)
            out.append(round(used))
        return out

    def household_counted(self, device: str, day: int,
                          use: list[int] | None = None) -> list[int]:
        """What the household meter counts on ``day``: the water used, with the
        meter's own error, in whole litres per hour (the firmware's slots are
        differences of its index)."""
        error = self.households[device].meter_error
        return [round(v * (1 + error)) for v in (use or self.household_use(device, day))]

    def household_hours(self, device: str, day: int,
                        use: list[int] | None = None) -> list[HourValue]:
        """The household's hours on ``day`` as the backend knows them (lost frames estimated).

        ``use`` (the day's ``household_use``) saves recomputing it.
        """
        home = self.households[device]
        use = self.household_counted(device, day, use)
        rng = random.Random(f"{self.seed}:lost:{device}:{day}")
        day_start = self.start + day * DAY_S
        quality = ["measured"] * 24
        # A frame carries the 6 hours before its send time; when it is lost,
        # the next frame's index still gives their sum.
        for send in range(day_start + home.send_phase_s, day_start + DAY_S, SEND_EVERY_S):
            if rng.random() < LOST_FRAME_RATE:
                first = max(day_start, send - SEND_EVERY_S)
                for h in range((first - day_start) // HOUR_S, (send - day_start) // HOUR_S):
                    quality[h] = "estimated"
        out = []
        h = 0
        while h < 24:
            if quality[h] != "estimated":
                out.append(HourValue(day_start + h * HOUR_S, float(use[h]), "measured"))
                h += 1
                continue
            end = h
            while end < 24 and quality[end] == "estimated":
                end += 1
            share = sum(use[h:end]) / (end - h)
            out.extend(HourValue(day_start + k * HOUR_S, share, "estimated")
                       for k in range(h, end))
            h = end
        return out

    def bulk_hours(self, district: str, day: int,
                   household_use: dict[str, list[int]] | None = None, noise: bool = True
                   ) -> tuple[list[HourValue], list[HourValue]]:
        """(inlet hours, outlet hours) of ``district`` on ``day``, as its bulk meters count.

        ``household_use`` (device -> the day's 24 values) saves recomputing them;
        ``noise=False`` leaves out the meters' random error per hour.
        """
        dma = self.by_name(district)
        use = household_use or {d: self.household_use(d, day) for d in dma.households}
        rng = random.Random(f"{self.seed}:bulk:{district}:{day}")
        flushing = self.flushing(district, day)
        day_start = self.start + day * DAY_S
        inlet, outlet = [], []
        for h in range(24):
            start = day_start + h * HOUR_S
            demand = float(sum(u[h] for u in use.values()))
            passed = demand * dma.passed_on_share
            true_in = (demand + passed + dma.background_l_h
                       + self._leak_litres("pipe", district, start) + flushing.get(h, 0.0))
            inlet.append(HourValue(start, round(
                true_in * (1 + dma.inflow_bias) * (1 + rng.gauss(0, 0.001) * noise), 1),
                "measured"))
            outlet.append(HourValue(start, round(
                passed * (1 + dma.outflow_bias) * (1 + rng.gauss(0, 0.001) * noise), 1),
                "measured"))
        return inlet, outlet

    def mean_inflow_l_h(self, district: str) -> float:
        """The district's mean inflow over its first day without pipe leaks (for the 1 % floor)."""
        dma = self.by_name(district)
        use = {d: self.household_use(d, 0) for d in dma.households}
        demand = sum(sum(u) for u in use.values()) / 24
        return demand * (1 + dma.passed_on_share) + dma.background_l_h

    # -- helpers -------------------------------------------------------------

    def by_name(self, district: str) -> District:
        """The district called ``district``."""
        return next(d for d in self.districts if d.name == district)

    def _leak_litres(self, where: str, subject: str, hour_start: int) -> float:
        return sum(leak.size_l_h for leak in self.leaks
                   if leak.subject == subject and leak.where == where
                   and hour_start >= leak.start)

    def flushing(self, district: str, day: int) -> dict[int, float]:
        """Unmetered operational use (mains flushing, fire service): about once a fortnight,
        2-5 hours at 500-3,000 L/h, mostly in working hours but sometimes at night."""
        rng = random.Random(f"{self.seed}:flush:{district}:{day}")
        if rng.random() >= 1 / 14:
            return {}
        first = rng.choice([1, 2, 3, 9, 10, 11, 13, 14])        # UTC hours
        rate = rng.uniform(500, 3000)
        return {h: rate for h in range(first, min(24, first + rng.randint(2, 5)))}


def district_name(n: int) -> str:
    """The name of the city's district ``n`` (from 0): ``dma01``, ``dma02``, ..."""
    return f"dma{n + 1:02d}"


def _weekday(t: int) -> int:
    return datetime.fromtimestamp(t, UTC).weekday()


def build(seed: int, *, districts: int = 4, households: int = 200, days: int = 21,
          start: int | None = None, leak_sizes_l_h: tuple[float, ...] = (),
          leak_after_days: int = 7, leak_start: int | None = None,
          leak_district: str | None = None) -> City:
    """A seeded city; with ``leak_sizes_l_h``, one household leak and one pipe leak of
    each size, each starting at a random hour after ``leak_after_days`` days (so
    every detector has a baseline first) and at least 7 days before the end.
    Pipe leaks go one to a district (a second leak in a district already losing
    water is a different question), household leaks round the districts.
    ``leak_start`` (unix s) starts every leak at that hour instead;
    ``leak_district`` (a district's name) puts every leak in that district, so
    the others stay without leaks."""
    rng = random.Random(f"{seed}:city")
    if start is None:
        start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())   # a Monday
    city = City(seed=seed, start=start, days=days)
    for n in range(districts):
        name = district_name(n)
        devices = tuple(f"{0x20000000 + n * 0x10000 + i:08x}" for i in range(households))
        for device in devices:
            city.households[device] = Household(
                device=device, district=name, persons=rng.choice(PERSONS),
                litres_per_person_day=rng.uniform(*LITRES_PER_PERSON_DAY),
                send_phase_s=rng.randrange(0, SEND_EVERY_S // HOUR_S) * HOUR_S,
                night_appliance=rng.random() < 0.05,
                meter_error=rng.uniform(-0.02, 0.02))
        has_outlet = n % 2 == 1
        city.districts.append(District(
            name=name, inflow=f"{0x10000000 + 2 * n:08x}",
            outflow=f"{0x10000001 + 2 * n:08x}" if has_outlet else None,
            households=devices,
            background_l_h=households * rng.uniform(0.5, 2.0),
            passed_on_share=rng.uniform(0.1, 0.4) if has_outlet else 0.0,
            inflow_bias=rng.uniform(-0.02, 0.02),
            outflow_bias=rng.uniform(-0.02, 0.02) if has_outlet else 0.0))
    last_start = days - 7
    for k, size in enumerate(leak_sizes_l_h):
        for where in ("household", "pipe"):
            if where == "pipe" and k >= districts:
                continue
            dma = city.districts[(k + (where == "household")) % districts]
            if leak_district is not None:
                dma = city.by_name(leak_district)
            day = rng.randrange(leak_after_days, max(leak_after_days + 1, last_start))
            when = start + day * DAY_S + rng.randrange(24) * HOUR_S
            if leak_start is not None:
                when = leak_start - leak_start % HOUR_S
            taken = {leak.subject for leak in city.leaks}
            subject = dma.name if where == "pipe" else rng.choice(
                [d for d in dma.households if d not in taken])
            city.leaks.append(Leak(where, dma.name, subject, float(size), when))
    return city


def add_city_arguments(parser: Any) -> None:
    """The options that describe the city (shared by ``simulate`` and ``modbus-sim``)."""
    parser.add_argument("--districts", type=int, default=2,
                        help="districts of the city (with --city; default 2)")
    parser.add_argument("--households", type=int, default=20,
                        help="households per district (with --city; default 20)")
    parser.add_argument("--leaks", default="",
                        help="with --city: leak sizes in L/h, comma-separated; one household "
                        "leak and one pipe leak of each size")
    parser.add_argument("--leak-start", type=float, default=None, metavar="UNIX_S",
                        help="with --city: simulated time the leaks start (default: a day in)")
    parser.add_argument("--leak-district", default=None, metavar="NAME",
                        help="with --city: put every leak in district NAME (dma01, ...; "
                        "default: household leaks round the districts, pipe leaks one to a "
                        "district)")


def city_from_args(args: Any, seed: int, start: float) -> City:
    """The city the options describe; ``start`` is the simulated time the run begins."""
    from knute.gateway.errors import KnuteError

    if args.districts < 1 or args.households < 1:
        raise KnuteError("--districts and --households must be at least 1")
    try:
        sizes = tuple(float(s) for s in args.leaks.split(",") if s.strip())
    except ValueError:
        raise KnuteError(f"--leaks {args.leaks!r}: expected sizes in L/h, "
                         "comma-separated") from None
    if any(s <= 0 for s in sizes):
        raise KnuteError(f"--leaks {args.leaks!r}: every size must be above 0")
    leak_district = getattr(args, "leak_district", None)
    names = [district_name(n) for n in range(args.districts)]
    if leak_district is not None and leak_district not in names:
        raise KnuteError(f"--leak-district {leak_district!r}: the city's districts are "
                         f"{', '.join(names)}")
    leak_start = args.leak_start if args.leak_start is not None else start + DAY_S
    return build(seed, districts=args.districts, households=args.households, days=30,
                 start=int(start - start % DAY_S), leak_sizes_l_h=sizes,
                 leak_start=int(leak_start), leak_district=leak_district)

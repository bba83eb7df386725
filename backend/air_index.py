"""The air-quality index: scales, hourly means, averaging, station and area (docs/air.md).

Pure functions, no I/O. Two scales:

- ``eaqi``: the EEA European Air Quality Index as revised in 2024 (six
  levels, hourly concentrations of all five pollutants);
- ``no``: Norway's national air-quality classes (four levels, hourly values).

A band's upper bound belongs to it (PM2.5 of exactly 5 µg/m³ is ``good``).
A station's hourly value of a pollutant is the mean of its checked readings
in that hour (at least ``min_readings`` of them); the averaged value is that
hour's value (``1h``) or the running mean of the last 24 hourly values
(``24h``, at least 18 of them for a full window). A station's level is its
worst pollutant's; an area's value of a pollutant is the (upper) median of
its usable stations' averaged values, its level again the worst pollutant's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from knute.backend.air_qc import DEFAULT_QC, Checked, Qc, disagrees, median, stuck

HOUR_S = 3600
WINDOW_HOURS = 24
FULL_WINDOW = 18            # 75 % of 24 hours: the usual coverage rule for a daily mean
UNIT = "µg/m³"


@dataclass(frozen=True)
class Scale:
    """One index scale: band upper bounds per pollutant, names, colours, averaging."""

    name: str
    bands: Mapping[str, tuple[float, ...]]      # upper bounds of levels 1..n-1; level n open
    names: tuple[str, ...]
    colours: tuple[str, ...]
    averaging: Mapping[str, str]                # pollutant -> "1h" | "24h"

    def level(self, pollutant: str, value: float) -> int:
        """The level (1 = best) of ``value`` µg/m³ of ``pollutant``."""
        for i, upper in enumerate(self.bands[pollutant]):
            if value <= upper:
                return i + 1
        return len(self.names)


# EEA, European Air Quality Index, bands revised in 2024 (ETC HE Report 2024/17;
# airindex.eea.europa.eu): "hourly concentrations of all five pollutants are used".
EAQI = Scale(
    "eaqi",
    {"pm2_5": (5, 15, 50, 90, 140), "pm10": (15, 45, 120, 195, 270),
     "no2": (10, 25, 60, 100, 150), "o3": (60, 100, 120, 160, 180),
     "so2": (20, 40, 125, 190, 275)},
    ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor"),
    ("#50f0e6", "#50ccaa", "#f0e641", "#ff5050", "#960032", "#7d2181"),
    {"pm2_5": "1h", "pm10": "1h", "no2": "1h", "o3": "1h", "so2": "1h"},
)
# Norway: forurensningsklasser (Miljødirektoratet, Vegdirektoratet,
# Helsedirektoratet, Folkehelseinstituttet; luftkvalitet.info), hourly values.
NO = Scale(
    "no",
    {"pm2_5": (30, 50, 150), "pm10": (60, 120, 400), "no2": (100, 200, 400),
     "o3": (100, 180, 240), "so2": (100, 350, 500)},
    ("low", "moderate", "high", "very_high"),
    ("#5cb85c", "#f0ad4e", "#d9534f", "#8e44ad"),
    {"pm2_5": "1h", "pm10": "1h", "no2": "1h", "o3": "1h", "so2": "1h"},
)
SCALES = {"eaqi": EAQI, "no": NO}


def with_pm_averaging(scale: Scale, averaging: str) -> Scale:
    """``scale`` with PM averaged over ``averaging`` (``1h`` or ``24h``)."""
    table = dict(scale.averaging)
    table.update({"pm2_5": averaging, "pm10": averaging})
    return Scale(scale.name, scale.bands, scale.names, scale.colours, table)


@dataclass
class HourValue:
    """One station's hour: mean per pollutant, readings used, notes of those readings."""

    means: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)


def hourly(checked: Iterable[Checked], min_readings: int = 2) -> dict[int, HourValue]:
    """The hourly means (keyed by hour start, unix s) of one station's checked readings."""
    sums: dict[int, dict[str, list[float]]] = {}
    notes: dict[int, set[str]] = {}
    for c in checked:
        hour = int(c.t) - int(c.t) % HOUR_S
        per = sums.setdefault(hour, {})
        for name, v in c.values.items():
            per.setdefault(name, []).append(v)
        notes.setdefault(hour, set()).update(c.notes)
    out: dict[int, HourValue] = {}
    for hour, per in sums.items():
        value = HourValue(notes=notes[hour])
        for name, values in per.items():
            if len(values) >= min_readings:
                value.means[name] = sum(values) / len(values)
                value.counts[name] = len(values)
        out[hour] = value
    return out


def averaged(hours: Mapping[int, HourValue], hour: int, pollutant: str,
             averaging: str) -> tuple[float | None, int]:
    """(value, hours used) of ``pollutant`` for the hour starting at ``hour``."""
    if averaging == "1h":
        h = hours.get(hour)
        if h is None or pollutant not in h.means:
            return None, 0
        return h.means[pollutant], 1
    values = [hours[t].means[pollutant]
              for t in range(hour - (WINDOW_HOURS - 1) * HOUR_S, hour + HOUR_S, HOUR_S)
              if t in hours and pollutant in hours[t].means]
    if not values:
        return None, 0
    return sum(values) / len(values), len(values)


@dataclass
class Index:
    """A station's or an area's index for one hour, on every scale."""

    scope: str
    subject: str
    hour: int                                   # start of the hour it is for
    values: dict[str, tuple[float, int]]        # pollutant -> (averaged value, hours)
    reasons: set[str] = field(default_factory=set)
    withheld: bool = False
    stations: list[str] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    area: str | None = None

    @property
    def status(self) -> str:
        """ok, provisional or withheld."""
        if self.withheld or not self.values:
            return "withheld"
        return "provisional" if self.reasons else "ok"


def station_index(device: str, checked: Sequence[Checked], hour: int, scale: Scale,
                  qc: Qc = DEFAULT_QC, min_readings: int = 2) -> Index:
    """The index of one station for the hour starting at ``hour``.

    ``checked`` are its checked readings up to the end of that hour (at least
    the 24 hours before it for a ``24h`` average), oldest first. Withheld when
    no pollutant has a value, or when the sensor is stuck (``stuck``); a
    reason for each value dropped by QC, each note (humid, no_humidity) and
    each 24-hour window shorter than ``FULL_WINDOW`` makes it provisional.
    """
    end = hour + HOUR_S
    used = [c for c in checked if c.t < end]
    hours = hourly(used, min_readings)
    index = Index("station", device, hour, {})
    pm25 = [c.values["pm2_5"] for c in used if "pm2_5" in c.values]
    if stuck(pm25, qc):
        index.reasons.add("stuck")
        index.withheld = True
        return index
    window_start = hour - (WINDOW_HOURS - 1) * HOUR_S
    for name in ("pm2_5", "pm10", "no2"):
        averaging = scale.averaging[name]
        value, n = averaged(hours, hour, name, averaging)
        if value is None:
            continue
        index.values[name] = (value, n)
        if averaging == "24h" and n < FULL_WINDOW:
            index.reasons.add("short_window")
        first = hour if averaging == "1h" else window_start
        for t in range(first, end, HOUR_S):
            if t in hours:
                index.reasons.update(hours[t].notes)
    in_hour = [c for c in used if c.t >= hour]
    for c in in_hour:
        index.reasons.update(c.dropped.values())
    if not index.values:
        index.withheld = True
        if not index.reasons:
            index.reasons.add("no_data")
    return index


def flag_neighbours(indexes: Sequence[Index], qc: Qc = DEFAULT_QC) -> None:
    """Mark each station whose PM2.5 disagrees with its area's other stations."""
    values = {i.subject: i.values["pm2_5"][0] for i in indexes
              if not i.withheld and "pm2_5" in i.values}
    flagged = [s for s, v in values.items()
               if disagrees(v, [o for t, o in values.items() if t != s], qc)]
    for index in indexes:
        if index.subject in flagged:
            index.reasons.add("neighbour_disagreement")
            index.withheld = True


DROP_REASONS = frozenset({"stuck", "neighbour_disagreement", "no_data"})


def area_index(name: str, stations: Sequence[Index], hour: int, qc: Qc = DEFAULT_QC) -> Index:
    """The index of an area from its stations' indexes for the same hour.

    Stations withheld are dropped (``dropped`` lists them with their reasons)
    and make the area provisional (``station_dropped``); so do provisional
    stations and an area left with one station (``single_station``). The
    area's value of each pollutant is the upper median of its stations'.
    """
    flag_neighbours(stations, qc)
    area = Index("area", name, hour, {})
    used = [s for s in stations if s.status != "withheld"]
    for s in stations:
        if s.status == "withheld":
            area.dropped.append({"station": s.subject, "reasons": sorted(s.reasons)})
            area.reasons.add("station_dropped")
    area.stations = sorted(s.subject for s in used)
    if not used:
        area.withheld = True
        area.reasons.add("no_data")
        return area
    if len(used) == 1 and len(stations) > 1:
        area.reasons.add("single_station")
    for s in used:
        area.reasons.update(r for r in s.reasons if r not in DROP_REASONS)
    for pollutant in ("pm2_5", "pm10", "no2"):
        pairs = [s.values[pollutant] for s in used if pollutant in s.values]
        if pairs:
            area.values[pollutant] = (median([v for v, _ in pairs]),
                                      min(n for _, n in pairs))
    return area


def iso_utc(t: float) -> str:
    """ISO 8601 UTC to the second with ``Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def level_of(index: Index, scale: Scale) -> tuple[int | None, str | None]:
    """(level, worst pollutant) of ``index`` on ``scale``; (None, None) when withheld."""
    if index.status == "withheld":
        return None, None
    worst = max(index.values, key=lambda p: (scale.level(p, index.values[p][0]),
                                             ("pm2_5", "pm10", "no2").index(p) * -1))
    return scale.level(worst, index.values[worst][0]), worst


def document(index: Index, primary: str, scales: Mapping[str, Scale], updated_at: float,
             stale_after_s: float) -> dict[str, Any]:
    """The retained MQTT document of ``index`` (docs/schema/air_index.schema.json)."""
    per: dict[str, Any] = {}
    for name, scale in scales.items():
        level, worst = level_of(index, scale)
        entry: dict[str, Any] = {
            "level": level,
            "band": scale.names[level - 1] if level else None,
            "colour": scale.colours[level - 1] if level else None,
            "pollutants": {
                p: {"value": round(v, 1), "unit": UNIT, "averaging": scale.averaging[p],
                    "hours": n, "level": scale.level(p, v)}
                for p, (v, n) in sorted(index.values.items())},
        }
        if worst:
            entry["pollutant"] = worst
        per[name] = entry
    main = per[primary]
    doc: dict[str, Any] = {
        "scope": index.scope, "subject": index.subject, "scale": primary,
        "level": main["level"], "band": main["band"], "colour": main["colour"],
        "status": index.status, "reasons": sorted(index.reasons),
        "hour": iso_utc(index.hour + HOUR_S), "updated_at": iso_utc(updated_at),
        "valid_until": iso_utc(index.hour + HOUR_S + stale_after_s), "scales": per,
    }
    if "pollutant" in main:
        doc["pollutant"] = main["pollutant"]
    if index.scope == "area":
        doc["stations"] = index.stations
        doc["dropped"] = index.dropped
    elif index.area:
        doc["area"] = index.area
    return doc


def topic(prefix: str, index: Index) -> str:
    """``<prefix>/air/index/station/<device>`` or ``<prefix>/air/index/area/<area>``."""
    return f"{prefix}/air/index/{index.scope}/{index.subject}"

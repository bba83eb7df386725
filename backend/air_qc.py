"""Quality control and corrections for low-cost optical PM sensors (docs/air.md).

Pure functions of readings, no I/O. A reading of kind ``air_quality`` becomes
an ``AirReading``; ``check`` turns it into the values the index may use (PM
corrected for humidity) and the reasons it may not use some of them. Rules:

- warm-up and fault status bits (``warmup``, ``pm_fault``, ``pm_bad_frames``,
  ``climate_fault``, ``no2_fault``) drop the values they concern;
- out of range: PM outside the sensor's range (SDS011 datasheet: 0.0-999.9
  µg/m³), PM2.5 above PM10 (PM2.5 is part of PM10), humidity outside 0-100 %;
- humidity: above ``rh_from`` (70 %) PM is divided by the κ-Köhler growth
  factor of Crilley et al. 2018 (``growth_factor``); above ``rh_fog`` (95 %)
  the reading's PM is dropped (fog droplets, the correction does not hold);
  a correction larger than ``max_correction`` marks it ``humid`` (provisional);
- stuck: the last ``stuck_readings`` PM2.5 values all within ``stuck_range``;
- neighbours: a station's averaged PM2.5 farther from the median of the area's other
  stations than ``max(disagree_abs, disagree_rel × median)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PM_MAX = 999.9          # SDS011 datasheet: measuring range 0.0-999.9 µg/m³ (PM2.5 and PM10)
NO2_MAX = 2000.0        # above any ambient value; a fault rather than air
POLLUTANTS = ("pm2_5", "pm10", "no2")
PM = ("pm2_5", "pm10")
# Status bits of the air node (docs/mqtt.md) and the values each one spoils.
SPOILS: dict[str, tuple[str, ...]] = {
    "warmup": ("pm2_5", "pm10", "no2"),
    "pm_fault": PM,
    "pm_bad_frames": PM,
    "no2_fault": ("no2",),
}


@dataclass(frozen=True)
class Qc:
    """The thresholds of the rules; ``[air]`` in the backend configuration sets them."""

    kappa: float = 0.4              # bulk hygroscopicity; Crilley et al. 2018 fitted ~0.4
    rh_from: float = 70.0           # % RH: below, no correction
    rh_fog: float = 95.0            # % RH: above, PM dropped
    max_correction: float = 2.0     # a growth factor above it marks the reading humid
    stuck_readings: int = 12        # two hours at the air node's 600 s
    stuck_range: float = 0.0        # µg/m³: all equal
    disagree_abs: float = 10.0      # µg/m³
    disagree_rel: float = 1.0       # × the neighbours' median


DEFAULT_QC = Qc()


@dataclass(frozen=True)
class AirReading:
    """What the air index needs of one reading."""

    device: str
    t: float
    values: Mapping[str, float]     # pm2_5, pm10, no2 as the node reported them
    rh: float | None
    alarms: frozenset[str] = frozenset()


@dataclass
class Checked:
    """One reading after QC: usable values (PM corrected) and why others were dropped."""

    device: str
    t: float
    values: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)   # pollutant -> reason
    notes: set[str] = field(default_factory=set)            # humid, no_humidity
    factor: float = 1.0


def from_doc(doc: Mapping[str, Any], t: float) -> AirReading:
    """The ``AirReading`` of a schema-valid reading document received at unix time ``t``."""
    readings = doc.get("readings", {})
    values = {}
    for name in POLLUTANTS:
        value = readings.get(name, {}).get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = float(value)
    rh = readings.get("humidity", {}).get("value")
    return AirReading(str(doc["device"]), t, values,
                      float(rh) if isinstance(rh, int | float) else None,
                      frozenset(doc.get("alarms", [])))


def growth_factor(rh: float, kappa: float) -> float:
    """The mass growth factor C of hygroscopic particles at relative humidity ``rh`` (%).

    Crilley et al. 2018 (doi:10.5194/amt-11-709-2018), from κ-Köhler theory:
    C = 1 + (κ / 1.65) / (1 / a_w − 1), a_w = RH / 100 (1.65 is the dry
    particle density they assume, g/cm³). Dry PM = measured PM / C.
    """
    a_w = rh / 100.0
    return 1.0 + (kappa / 1.65) / (1.0 / a_w - 1.0)


def check(reading: AirReading, qc: Qc = DEFAULT_QC) -> Checked:
    """Apply the status-bit, range and humidity rules to one reading."""
    out = Checked(reading.device, reading.t)
    out.values.update(reading.values)
    for bit, names in SPOILS.items():
        if bit in reading.alarms:
            for name in names:
                if name in out.values:
                    out.dropped[name] = bit
                    del out.values[name]
    for name in PM:
        if name in out.values and not 0.0 <= out.values[name] <= PM_MAX:
            out.dropped[name] = "out_of_range"
            del out.values[name]
    no2 = out.values.get("no2")
    if no2 is not None and not 0.0 <= no2 <= NO2_MAX:
        out.dropped["no2"] = "out_of_range"
        del out.values["no2"]
    pm25, pm10 = out.values.get("pm2_5"), out.values.get("pm10")
    if pm25 is not None and pm10 is not None and pm25 > pm10 + 1.0:
        # 1 µg/m³ of slack: the two are rounded to 0.1 and counted separately.
        for name in PM:
            out.dropped[name] = "out_of_range"
            del out.values[name]
    rh = reading.rh
    if "climate_fault" in reading.alarms or rh is None or not 0.0 <= rh <= 100.0:
        if any(name in out.values for name in PM):
            out.notes.add("no_humidity")
        return out
    if rh > qc.rh_fog:
        for name in PM:
            if name in out.values:
                out.dropped[name] = "fog"
                del out.values[name]
        return out
    if rh > qc.rh_from:
        out.factor = growth_factor(rh, qc.kappa)
        for name in PM:
            if name in out.values:
                out.values[name] = out.values[name] / out.factor
        if out.factor > qc.max_correction and any(name in out.values for name in PM):
            out.notes.add("humid")
    return out


def stuck(pm25: Sequence[float], qc: Qc = DEFAULT_QC) -> bool:
    """True when the last ``stuck_readings`` PM2.5 values (oldest first) are flat."""
    if qc.stuck_readings < 2 or len(pm25) < qc.stuck_readings:
        return False
    last = pm25[-qc.stuck_readings:]
    return max(last) - min(last) <= qc.stuck_range


def median(values: Sequence[float]) -> float:
    """The median; with an even count the upper of the two middle values (the safe side)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def disagrees(value: float, others: Sequence[float], qc: Qc = DEFAULT_QC) -> bool:
    """True when ``value`` is too far from the median of at least two neighbours' values."""
    if len(others) < 2:
        return False
    m = median(others)
    return abs(value - m) > max(qc.disagree_abs, qc.disagree_rel * m)

"""A simulated pollution episode for the air-quality index: reading documents as a gateway
publishes them on ``<prefix>/air_quality/<device>/up``.

``episode(stations, hours, start)`` yields one reading per station every
``interval_s``: PM2.5 follows ``pm25_at(hour)`` (a clean start, then rising
through every EEA band), PM10 is twice PM2.5, and a humid morning raises the
humidity (and, as an optical sensor sees it, the PM it reports by the growth
factor of backend.air_qc) over ``humid_hours``. A station listed in ``stuck``
repeats one value from ``stuck_from`` on. Times are the documents'
``received_at``: the backend's index follows reading time, so an episode of
a day is replayed in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

HOUR_S = 3600
# Hourly PM2.5 of the episode (dry µg/m³): two clean hours, then a level of every
# EEA band (good, fair, moderate, poor, very poor, extremely poor), two hours each.
PLATEAUS = (3.0, 3.0, 10.0, 10.0, 30.0, 30.0, 70.0, 70.0, 110.0, 110.0, 200.0, 200.0)


def pm25_at(hour: int) -> float:
    """The dry PM2.5 of the episode's ``hour`` (0-based); the last plateau holds."""
    return PLATEAUS[min(hour, len(PLATEAUS) - 1)]


def growth(rh: float, kappa: float = 0.4) -> float:
    """What humid air adds to what an optical sensor reports (backend.air_qc's factor)."""
    return 1.0 + (kappa / 1.65) / (100.0 / rh - 1.0) if rh > 70.0 else 1.0


def utc(t: float) -> str:
    """ISO 8601 UTC with milliseconds, as the gateway writes ``received_at``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def reading(device: str, fcnt: int, t: float, pm25: float, pm10: float, rh: float,
            alarms: Sequence[str] = ()) -> dict[str, Any]:
    """One schema-valid air reading document."""
    return {
        "id": f"{device}:{fcnt}", "device": device, "kind": "air_quality", "fcnt": fcnt,
        "received_at": utc(t),
        "readings": {"pm2_5": {"value": round(pm25, 1), "unit": "µg/m³"},
                     "pm10": {"value": round(pm10, 1), "unit": "µg/m³"},
                     "temperature": {"value": 2.5, "unit": "°C"},
                     "humidity": {"value": round(rh, 1), "unit": "%"},
                     "pressure": {"value": 1009.0, "unit": "hPa"}},
        "alarms": list(alarms), "battery": None, "profile": [],
        "receivers": [{"source": "lora0", "rssi_dbm": -99}], "gateway": "gw-sim",
        "source": "radio",
    }


def episode(stations: Sequence[str], hours: int, start: int, *, interval_s: int = 600,
            humid_hours: Sequence[int] = (2, 3), humid_rh: float = 88.0,
            stuck: Sequence[str] = (), stuck_from: int = 4,
            offsets: dict[str, float] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, reading) of every station, in time order, for ``hours`` hours from ``start``.

    ``offsets`` scales each station's PM (1.0 by default) so that neighbours
    differ a little; a stuck station reports its ``stuck_from`` hour's first value
    for ever after.
    """
    offsets = offsets or {}
    fcnt = dict.fromkeys(stations, 0)
    frozen: dict[str, float] = {}
    for step in range(hours * HOUR_S // interval_s):
        t = start + step * interval_s
        hour = step * interval_s // HOUR_S
        ripple = 0.3 if step % 2 else -0.3
        for device in stations:
            rh = humid_rh if hour in humid_hours else 55.0
            dry = pm25_at(hour) * offsets.get(device, 1.0) + ripple
            seen = dry * growth(rh)
            if device in stuck and hour >= stuck_from:
                seen = frozen.setdefault(device, seen)
            fcnt[device] += 1
            yield (f"knute/air_quality/{device}/up",
                   reading(device, fcnt[device], t + 1.5, seen, max(2 * seen, seen + 1.0), rh))

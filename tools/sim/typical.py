"""Typical readings of each sensor kind, used for size, airtime and battery figures.

These are the frames the city's nodes send most of the time: a household water
meter four times a day (index, 6 hourly values, no alarm, battery) and an air
node every 10 minutes (PM1/2.5/10, temperature, humidity, pressure, status).
"""

from __future__ import annotations

from typing import Any

TYPICAL: dict[str, dict[str, Any]] = {
    "water_meter": {
        "index": 123_456,            # 123.456 m³
        "profile_end_h": 200,
        "alarms": 0,
        "battery": 17,               # 85 %
        "profile": [0, 2, 31, 45, 12, 8],
    },
    "air_quality": {
        "pm1": 52,                   # 5.2 µg/m³
        "pm2_5": 87,                 # 8.7 µg/m³
        "pm10": 143,                 # 14.3 µg/m³
        "temperature": -35,          # -3.5 °C
        "humidity": 64,
        "pressure": 10132,           # 1013.2 hPa
        "status": 0,
    },
}

TYPICAL_DEVICE_ID = 0x00001234
TYPICAL_FCNT = 1000
TYPICAL_KEY = bytes(range(16))


def typical_frame(kind: str) -> bytes:
    """The encrypted frame of the typical readings of `kind` (4-byte tag)."""
    from knute.protocol import frame

    return frame.encode(kind, TYPICAL_DEVICE_ID, TYPICAL_FCNT, TYPICAL[kind], TYPICAL_KEY)

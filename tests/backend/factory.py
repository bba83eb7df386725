"""Reading documents for the backend's tests, shaped as docs/mqtt.md describes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

HOUR_S = 3600
T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())     # a Monday, 00:00 UTC (01:00 Oslo)


def utc(t: float, millis: bool = True) -> str:
    """ISO 8601 UTC with ``Z`` (milliseconds unless ``millis`` is False)."""
    text = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return (text[:-3] if millis else text[:-7]) + "Z"


def reading(device: str, fcnt: int, last_end: int, litres: list[float], index_l: float | None,
            *, received_delay_s: float = 0.25, alarms: tuple[str, ...] = (),
            id_: str | None = None, kind: str = "water_meter") -> dict[str, Any]:
    """A water-meter reading whose profile's newest slot ends at ``last_end`` (unix s)."""
    n = len(litres)
    profile = [{"start": utc(last_end - (n - i) * HOUR_S, False),
                "end": utc(last_end - (n - 1 - i) * HOUR_S, False), "litres": v}
               for i, v in enumerate(litres)]
    readings = {} if index_l is None else {"index": {"value": index_l, "unit": "L"}}
    return {
        "id": id_ or f"{device}:{fcnt}", "device": device, "kind": kind, "fcnt": fcnt,
        "received_at": utc(last_end + received_delay_s), "readings": readings,
        "alarms": list(alarms), "battery": 80, "profile": profile,
        "receivers": [{"source": "lora0", "rssi_dbm": -97}], "gateway": "gw-test",
        "source": "radio",
    }


def topic(doc: dict[str, Any], prefix: str = "knute") -> str:
    """The topic a gateway publishes ``doc`` on."""
    return f"{prefix}/{doc['kind']}/{doc['device']}/up"

"""The MQTT JSON of one accepted frame, and its topic.

Built once per accepted frame on the daemon's hot path, so the kinds table is
turned into a per-kind plan once and ISO timestamps of whole hours are cached.
docs/mqtt.md and docs/schema/reading.schema.json describe the result.

What goes where (read from protocol.kinds, nothing kind-specific here):

- a ``bits`` field's set bits go to ``alarms`` (bit names, in table order);
- a field named ``battery`` goes to ``battery`` (scaled, in %);
- the downlink report ``dl`` (docs/protocol.md section 12.7, the last field of
  every kind) goes to ``dl`` as ``{"flags": [names], "results": [{"command",
  "result", "detail"}, ...]}``, absent when the frame carried none;
- a ``series`` field ``X`` goes to ``profile`` and needs a field ``X_end_h``:
  the unix hour (seconds // 3600) modulo 256 at which the last slot ends;
- every other field goes to ``readings`` as ``{"value": v, "unit": u}``
  (``value`` null when the sensor had no valid value; optional fields that
  the frame left off are absent).

Profile hours: the frame only carries the end hour modulo 256, so it is
resolved against the gateway's ``received_at``: the end hour is the latest
unix hour H with ``H <= received_hour + 2`` and ``H % 256 == profile_end_h``.
The two hours of slack accept a node clock running up to two hours ahead of
the gateway; anything else is taken to lie in the past (up to 253 hours).
Slot i of n (oldest first) covers the hour ending at H - (n - 1 - i).

The id: ``"<device>:<fcnt>"`` while the device's epoch is 0, and
``"<device>:<epoch>:<fcnt>"`` once it is higher. The spool keeps the epoch
beside the device's replay counter and adds one to it whenever that counter is
reset (``knute devices reset-counter``, which re-provisioning also needs), in
the same transaction; within an epoch only a higher counter is accepted, so an
id never names two different readings, and a copy of the same reading (heard
twice, re-sent after a crash) keeps its id.

The pipeline hands the spool a ``Reading`` (the ingredients of the JSON); the
spool builds its bytes with ``Reading.json(epoch)``, the same bytes
``reading_json`` gives, once it knows the device's epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from knute.protocol import kinds
from knute.protocol.downlink_send import RESULTS

PROFILE_SLACK_H = 2
REPORT = kinds.REPORT_FIELD[0]
# Names of the report's flag bits, bit 0 first (docs/protocol.md section 12.7).
REPORT_FLAGS = ("want", "clock", "alarm", "rekey", "update")

# Per kind id: a tuple of (name, role, unit, mul, div, bits) built from protocol.kinds.
_Plan = tuple[tuple[str, str, str, int, int, tuple[str, ...]], ...]
_PLANS: dict[int, _Plan] = {}
_HOUR_ISO: dict[int, str] = {}
_last_sec: list[Any] = [-1, ""]     # cache: the last whole second and its ISO prefix
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def topic(prefix: str, kind: str, device: str) -> str:
    """The topic of a reading: ``<prefix>/<kind>/<device>/up``."""
    return f"{prefix}/{kind}/{device}/up"


def status_topic(prefix: str, gateway_id: str) -> str:
    """The retained status topic of a gateway: ``<prefix>/gateway/<gateway-id>/status``."""
    return f"{prefix}/gateway/{gateway_id}/status"


def device_name(device_id: int) -> str:
    """A device id as it appears in topics and JSON: 8 lower-case hex digits."""
    return f"{device_id:08x}"


def _plan(kind_id: int) -> _Plan:
    plan = _PLANS.get(kind_id)
    if plan is not None:
        return plan
    kind = kinds.kind_by_id(kind_id)
    names = {f["name"] for f in kind["fields"]}
    steps = []
    for field in kind["fields"]:
        name = field["name"]
        if field["type"] == "bits":
            role = "bits"
        elif name == REPORT:
            role = "report"
        elif field["type"] == "series":
            role = "series"
        elif name == "battery":
            role = "battery"
        elif name.endswith("_end_h") and name[: -len("_end_h")] in names:
            role = "end_h"
        else:
            role = "reading"
        steps.append((name, role, field.get("unit", ""), field.get("mul", 1),
                      field.get("div", 1), tuple(field.get("bits", ()))))
    plan = tuple(steps)
    _PLANS[kind_id] = plan
    return plan


def _scale(raw: int, mul: int, div: int) -> int | float:
    num = raw * mul
    if div == 1:
        return num
    if num % div == 0:
        return num // div
    return num / div


def iso_utc(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and Z, e.g. ``2024-05-01T12:00:00.250Z``."""
    sec = int(ts // 1)
    ms = int((ts - sec) * 1000)
    if sec != _last_sec[0]:
        _last_sec[0] = sec
        _last_sec[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    return f"{_last_sec[1]}{ms:03d}Z"


def hour_iso(hour: int) -> str:
    """The ISO 8601 UTC time (with Z) of the start of unix hour ``hour``."""
    text = _HOUR_ISO.get(hour)
    if text is None:
        if len(_HOUR_ISO) > 4096:
            _HOUR_ISO.clear()
        text = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour * 3600))
        _HOUR_ISO[hour] = text
    return text


def resolve_end_hour(end_h_mod: int, received_at: float) -> int:
    """The unix hour a profile's last slot ends at, from its value modulo 256.

    The latest hour H with H <= received hour + PROFILE_SLACK_H and
    H % 256 == end_h_mod.
    """
    limit = int(received_at // 3600) + PROFILE_SLACK_H
    return limit - ((limit - end_h_mod) % 256)


def profile_slots(values: Iterable[int], end_hour: int, unit: str, mul: int = 1,
                  div: int = 1) -> list[dict[str, Any]]:
    """Hourly slots (oldest first) ending at ``end_hour``, each with its own start/end."""
    items = list(values)
    key = "litres" if unit == "L" else "value"
    first_end = end_hour - len(items) + 1
    out = []
    for i, raw in enumerate(items):
        end = first_end + i
        out.append({"start": hour_iso(end - 1), "end": hour_iso(end),
                    key: _scale(raw, mul, div)})
    return out


def report_dict(series: list[int]) -> dict[str, Any]:
    """The ``dl`` object of a reading: a report series' flag names and command results."""
    flags = [REPORT_FLAGS[pos] for pos in range(len(REPORT_FLAGS)) if series[0] >> pos & 1]
    results = []
    for item in series[1:]:
        code = item & 0xF
        results.append({"command": item >> 8,
                        "result": RESULTS[code] if code < len(RESULTS) else f"result_{code}",
                        "detail": (item >> 4) & 0xF})
    return {"flags": flags, "results": results}


def reading_id(device: str, fcnt: int, epoch: int = 0) -> str:
    """The idempotency key: ``<device>:<fcnt>`` in epoch 0, else ``<device>:<epoch>:<fcnt>``."""
    return f"{device}:{fcnt}" if not epoch else f"{device}:{epoch}:{fcnt}"


def reading_dict(frame: dict[str, Any], *, device: str, gateway_id: str, received_at: float,
                 receivers: list[dict[str, Any]], source: str,
                 site: dict[str, Any] | None, epoch: int = 0,
                 receivers_dropped: int = 0) -> dict[str, Any]:
    """The reading as a dict (what reading_json serialises).

    ``epoch`` (the device's counter epoch) is part of the id and appears as a
    field when it is not 0; ``receivers_dropped`` (receivers left out of
    ``receivers`` by the bound on the list) appears when it is not 0.
    """
    values = frame["values"]
    fcnt = frame["fcnt"]
    readings: dict[str, Any] = {}
    alarms: list[str] = []
    battery: int | float | None = None
    profile: list[dict[str, Any]] = []
    report: dict[str, Any] | None = None
    for name, role, unit, mul, div, bits in _plan(frame["kind_id"]):
        if name not in values:
            continue
        raw = values[name]
        if role == "reading":
            readings[name] = {"value": None if raw is None else _scale(raw, mul, div),
                              "unit": unit}
        elif role == "bits":
            if raw:
                alarms.extend(bits[pos] for pos in range(len(bits)) if raw >> pos & 1)
        elif role == "battery":
            battery = None if raw is None else _scale(raw, mul, div)
        elif role == "report" and raw:
            report = report_dict(raw)
        elif role == "series" and raw:
            end_mod = values.get(name + "_end_h")
            if end_mod is not None:
                profile.extend(profile_slots(raw, resolve_end_hour(end_mod, received_at),
                                             unit, mul, div))
    out: dict[str, Any] = {
        "id": reading_id(device, fcnt, epoch),
        "device": device,
        "kind": frame["kind"],
        "fcnt": fcnt,
    }
    if epoch:
        out["epoch"] = epoch
    out["received_at"] = iso_utc(received_at)
    out["readings"] = readings
    out["alarms"] = alarms
    out["battery"] = battery
    out["profile"] = profile
    if report is not None:
        out["dl"] = report
    out["receivers"] = receivers
    if receivers_dropped:
        out["receivers_dropped"] = receivers_dropped
    out["gateway"] = gateway_id
    out["source"] = source
    if site is not None:
        out["site"] = site
    return out


def reading_json(frame: dict[str, Any], *, device: str, gateway_id: str, received_at: float,
                 receivers: list[dict[str, Any]], source: str,
                 site: dict[str, Any] | None, epoch: int = 0,
                 receivers_dropped: int = 0) -> bytes:
    """The JSON bytes (UTF-8, compact) of one reading; see the module docstring."""
    return _dumps(reading_dict(frame, device=device, gateway_id=gateway_id,
                               received_at=received_at, receivers=receivers, source=source,
                               site=site, epoch=epoch,
                               receivers_dropped=receivers_dropped)).encode()


@dataclass(frozen=True, slots=True)
class Reading:
    """What one reading's JSON is built from, as the pipeline hands it to the spool.

    The spool builds the JSON (``json(epoch)``) once it knows the device's epoch,
    in the transaction that accepts the reading, and stores it compressed.
    """

    device_id: int
    kind: str
    kind_id: int
    fcnt: int
    values: dict[str, Any]          # raw field values, as protocol.frame.decode gives them
    received_at: float
    receivers: list[dict[str, Any]]
    source: str
    site: dict[str, Any] | None
    gateway_id: str
    prefix: str
    receivers_dropped: int = 0

    def topic(self) -> str:
        """The MQTT topic of the reading."""
        return topic(self.prefix, self.kind, device_name(self.device_id))

    def json(self, epoch: int = 0) -> bytes:
        """The JSON bytes, exactly as ``reading_json`` builds them."""
        frame = {"kind": self.kind, "kind_id": self.kind_id, "device_id": self.device_id,
                 "fcnt": self.fcnt, "values": self.values}
        return reading_json(frame, device=device_name(self.device_id),
                            gateway_id=self.gateway_id, received_at=self.received_at,
                            receivers=self.receivers, source=self.source, site=self.site,
                            epoch=epoch, receivers_dropped=self.receivers_dropped)


def is_alarm(frame: dict[str, Any]) -> bool:
    """True when any alarm/status bit of the frame is set (the spool evicts these last)."""
    values = frame["values"]
    for name, role, _unit, _mul, _div, _bits in _plan(frame["kind_id"]):
        if role == "bits" and values.get(name):
            return True
    return False

"""The silent-node alarm: a radio or serial node that stopped sending.

A node sends on its own schedule (a water meter ``sends_per_day`` times a day,
an air-quality node every ``interval_s``); the registry holds each device's
send interval (``interval_s``: set by ``knute provision`` from the node's
config.json, by ``knute devices add --interval-s``, an import file or the
shared registry, and moved by a config downlink the node reports applied,
``config_send_interval_s``). A device without one falls back on its kind's
interval (defaults below, ``[silence.interval_s]`` overrides them, see
docs/operations.md). So the gateway knows when each device is overdue: a meter
sending every 8 hours is not silent after 2 hours, one sending every 15
minutes is. Only after ``missed_intervals`` whole intervals of its own without
a single accepted frame (plus half an interval of slack for the node's jitter
and a phase drawn anew at its boot) is it ``silent``: a node that loses a
frame now and then is not, its next frame's hourly profile covers the gap
(``profile_len`` 12 with 4 sends a day covers one lost frame).

The change is published like a Modbus device's ``offline`` condition (the
shape of docs/mqtt.md, retained, from the spool): ``silent`` when a device
crosses the line, ``heard`` at its next accepted frame. Pure: the daemon
calls ``check(now)`` now and then and ``heard()`` for every accepted frame.

A device that was never heard since the gateway started counts from its
registry ``last_seen`` (the display cache) or, without one, from the
gateway's start, so a restart neither forgets a silent device for long nor
raises an alarm for every device at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SILENT = "silent"
HEARD = "heard"
SOURCE = "radio"

# A kind's nominal send interval when [silence.interval_s] does not name it:
# the firmware defaults (firmware/config.py: water.sends_per_day 4,
# air.interval_s 600).
DEFAULT_INTERVAL_S: Mapping[str, float] = {"water_meter": 6 * 3600.0, "air_quality": 600.0}
_FIRMWARE_SENDS_PER_DAY = 4
_FIRMWARE_AIR_INTERVAL_S = 600
DEFAULT_MISSED = 3
SLACK_INTERVALS = 0.5


@dataclass(frozen=True)
class SilenceSettings:
    """``[silence]``: after how many missed intervals a device is silent, and each kind's."""

    missed_intervals: int = DEFAULT_MISSED          # 0 turns the alarm off
    interval_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVAL_S))

    def interval_for(self, kind: str, device_interval_s: float | None = None) -> float | None:
        """A device's send interval: its own (from the registry), else its kind's."""
        if device_interval_s:
            return device_interval_s
        return self.interval_s.get(kind)

    def limit_s(self, kind: str, device_interval_s: float | None = None) -> float | None:
        """Seconds without a frame after which a device of ``kind`` with its own interval
        ``device_interval_s`` (None: the kind's) is silent (None: never)."""
        interval = self.interval_for(kind, device_interval_s)
        if not self.missed_intervals or not interval:
            return None
        return (self.missed_intervals + SLACK_INTERVALS) * interval


@dataclass(frozen=True)
class SilenceCondition:
    """A change of a device's condition: ``silent`` or ``heard`` again.

    Same interface as ``gateway.modbus.poller.DeviceCondition`` (``device_id``,
    ``kind``, ``condition``, ``since``, ``to_dict()``), so the daemon spools it
    on the same path.
    """

    device_id: int
    kind: str
    condition: str              # "silent" | "heard"
    since: float                # unix seconds: when it became overdue, or the frame's time
    last_seen: float | None     # the last accepted frame before the silence
    interval_s: float
    missed_intervals: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (docs/mqtt.md, "Device condition")."""
        silent = self.condition == SILENT
        detail = None
        if silent:
            detail = (f"no frame for {self.missed_intervals} send intervals of "
                      f"{self.interval_s:g} s")
        return {"device": f"{self.device_id:08x}", "kind": self.kind,
                "condition": self.condition, "reason": "overdue" if silent else None,
                "detail": detail, "since": self.since,
                "consecutive_failures": self.missed_intervals if silent else 0,
                "source": SOURCE, "last_seen": self.last_seen,
                "interval_s": self.interval_s}


class SilenceWatch:
    """Which devices are overdue; the condition changes to publish."""

    def __init__(self, settings: SilenceSettings, started_at: float) -> None:
        self.settings = settings
        self.started_at = started_at
        self._last: dict[int, float] = {}        # device -> last accepted frame (unix s)
        self._silent: dict[int, SilenceCondition] = {}

    def heard(self, device_id: int, kind: str, at: float) -> SilenceCondition | None:
        """An accepted frame; the ``heard`` change when the device was silent."""
        if at > self._last.get(device_id, 0.0):
            self._last[device_id] = at
        was = self._silent.pop(device_id, None)
        if was is None:
            return None
        return SilenceCondition(device_id, kind, HEARD, at, was.last_seen, was.interval_s,
                                was.missed_intervals)

    def check(self, devices: Iterable[tuple[int, str, float | None, float | None]],
              now: float) -> list[SilenceCondition]:
        """``silent`` changes for the devices (id, kind, registry last_seen, the device's
        own send interval or None for its kind's) overdue at ``now``.

        Devices no longer listed are forgotten (removed from the registry).
        """
        out: list[SilenceCondition] = []
        listed: set[int] = set()
        for device_id, kind, last_seen, own_interval in devices:
            listed.add(device_id)
            limit = self.settings.limit_s(kind, own_interval)
            if limit is None or device_id in self._silent:
                continue
            last = self._last.get(device_id)
            if last is None:
                last = last_seen
            since = (last if last is not None else self.started_at) + limit
            if now < since:
                continue
            interval = self.settings.interval_for(kind, own_interval)
            assert interval is not None          # limit_s gave a limit
            cond = SilenceCondition(device_id, kind, SILENT, since, last, interval,
                                    self.settings.missed_intervals)
            self._silent[device_id] = cond
            out.append(cond)
        for gone in [d for d in self._silent if d not in listed]:
            del self._silent[gone]
        return out

    def silent(self) -> list[int]:
        """The devices silent now, sorted."""
        return sorted(self._silent)

    def stats(self) -> dict[str, Any]:
        """``silence`` in ``knute gateway status --json``."""
        return {"silent": len(self._silent),
                "devices": [f"{d:08x}" for d in sorted(self._silent)],
                "missed_intervals": self.settings.missed_intervals,
                "interval_s": dict(self.settings.interval_s)}


def node_send_interval_s(kind: str, node_config: Mapping[str, Any]) -> float | None:
    """The send interval of a node from its config.json (firmware/config.py's keys and
    defaults): ``86400 / water.sends_per_day`` for a meter, ``air.interval_s`` for an
    air-quality node; None for a kind that sends on no schedule of its own."""
    if kind == "water_meter":
        section = node_config.get("water") or {}
        spd = section.get("sends_per_day", _FIRMWARE_SENDS_PER_DAY)
        return 86400.0 / spd if isinstance(spd, int) and spd > 0 else None
    if kind == "air_quality":
        section = node_config.get("air") or {}
        interval = section.get("interval_s", _FIRMWARE_AIR_INTERVAL_S)
        return float(interval) if isinstance(interval, int | float) and interval > 0 else None
    return None


def config_send_interval_s(values: Mapping[str, Any]) -> float | None:
    """The new send interval a config downlink sets (its ``values``, whitelist code as
    text -> value, protocol/downlink.py CONFIG_KEYS), or None when it sets none."""
    # Here, not at the top: protocol.downlink brings AES-CCM (cryptography), and every
    # command that reads the gateway's configuration imports this module.
    from knute.protocol import downlink as pdl

    out = None
    for code, value in values.items():
        try:
            row = pdl.config_entry(int(code))
        except (TypeError, ValueError):
            continue
        if row is None or not isinstance(value, int) or value <= 0:
            continue
        section, key = row[1], row[2]
        if (section, key) == ("water", "sends_per_day"):
            out = 86400.0 / value
        elif (section, key) == ("air", "interval_s"):
            out = float(value)
    return out


def parse_settings(table: Any, file: str) -> SilenceSettings:
    """Check the ``[silence]`` table of a gateway config (errors name the key)."""
    from knute.gateway.errors import KnuteError

    def error(key: str, problem: str) -> KnuteError:
        return KnuteError(f"{file}: silence.{key}: {problem}")

    if not isinstance(table, dict):
        raise KnuteError(f"{file}: silence: must be a table")
    for key in table:
        if key not in ("missed_intervals", "interval_s"):
            raise error(key, "unknown key")
    missed = table.get("missed_intervals", DEFAULT_MISSED)
    if isinstance(missed, bool) or not isinstance(missed, int) or not 0 <= missed <= 1000:
        raise error("missed_intervals", f"must be an integer 0..1000, got {missed!r}")
    intervals = dict(DEFAULT_INTERVAL_S)
    given = table.get("interval_s", {})
    if not isinstance(given, dict):
        raise error("interval_s", "must be a table of kind = seconds")
    for kind, value in given.items():
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not 0 <= value <= 366 * 86400):
            raise error(f"interval_s.{kind}", f"must be seconds 0..31622400, got {value!r}")
        intervals[kind] = float(value)
    return SilenceSettings(missed_intervals=missed, interval_s=intervals)

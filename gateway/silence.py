"""The silent-node alarm: a radio or serial node that stopped sending.

A node sends on its own schedule (a water meter ``sends_per_day`` times a day,
an air-quality node every ``interval_s``); the gateway knows each kind's send
interval (defaults below, ``[silence.interval_s]`` overrides them, see
docs/operations.md) and so when a device is overdue. Only after
``missed_intervals`` whole intervals without a single accepted frame (plus
half an interval of slack for the node's jitter and a phase drawn anew at its
boot) is it ``silent``: a node that loses a frame now and then is not, its
next frame's hourly profile covers the gap (``profile_len`` 12 with 4 sends a
day covers one lost frame).

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
DEFAULT_MISSED = 3
SLACK_INTERVALS = 0.5


@dataclass(frozen=True)
class SilenceSettings:
    """``[silence]``: after how many missed intervals a device is silent, and each kind's."""

    missed_intervals: int = DEFAULT_MISSED          # 0 turns the alarm off
    interval_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVAL_S))

    def limit_s(self, kind: str) -> float | None:
        """Seconds without a frame after which a device of ``kind`` is silent (None: never)."""
        interval = self.interval_s.get(kind)
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

    def check(self, devices: Iterable[tuple[int, str, float | None]],
              now: float) -> list[SilenceCondition]:
        """``silent`` changes for the devices (id, kind, registry last_seen) overdue at ``now``.

        Devices no longer listed are forgotten (removed from the registry).
        """
        out: list[SilenceCondition] = []
        listed: set[int] = set()
        for device_id, kind, last_seen in devices:
            listed.add(device_id)
            limit = self.settings.limit_s(kind)
            if limit is None or device_id in self._silent:
                continue
            last = self._last.get(device_id)
            if last is None:
                last = last_seen
            since = (last if last is not None else self.started_at) + limit
            if now < since:
                continue
            interval = self.settings.interval_s[kind]
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

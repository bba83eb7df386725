"""The gateway's data types: what flows from a source to the broker.

Pure: no sockets, files or SQLite here, so the pipeline (gateway.pipeline) and
the forwarder's delivery window (gateway.delivery) are built and tested on
these types alone, and the I/O modules (registry, spool, status socket,
forwarder) import them from here rather than from each other.

- ``Reception``: one frame as heard by one source (sources -> pipeline).
- ``Device``: one registered device (registry -> pipeline).
- ``Accepted``: one message ready to spool (pipeline, daemon -> spool).
- ``Row``: one spooled message as the forwarder reads it (spool -> forwarder).
- ``Counters``: thread-safe integer counters (pipeline, sources -> status).

A message's ``retain`` flag is part of the message: readings are events
(not retained), a device's condition is state (retained, so a consumer that
subscribes later still sees it). The spool stores it with the row.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from knute.gateway.message import Reading


@dataclass(frozen=True)
class Reception:
    """One frame as heard by one source.

    ``receiver`` is that source's radio metadata (always with ``source``; radio
    sources add rssi_dbm, snr_db, freq_hz, sf or datr, and a packet forwarder
    its gateway_eui, chan and tmst). ``at`` is a monotonic clock reading used
    for the dedup window; ``received_at`` is wall-clock unix seconds.
    """

    source: str
    source_type: str           # "serial" | "radio" | "modbus"
    frame: bytes               # empty for an already-decoded (Modbus) reading
    received_at: float
    at: float
    receiver: Mapping[str, Any]


@dataclass(frozen=True)
class Device:
    """One registered device. ``key`` is left out of repr() so it never lands in a log."""

    device_id: int
    kind: str
    key: bytes = field(repr=False)
    name: str = ""
    site: str = ""
    location: Mapping[str, Any] = field(default_factory=dict)
    last_fcnt: int | None = None
    last_seen: float | None = None
    battery: int | None = None
    alarms: tuple[str, ...] = ()
    interval_s: float | None = None     # its own send interval; None: its kind's (silence)

    @property
    def hex_id(self) -> str:
        """The device id as printed in topics and logs: 8 lower-case hex digits."""
        return f"{self.device_id:08x}"

    def site_info(self) -> dict[str, Any] | None:
        """Site and location metadata for the MQTT reading, or None when there is none."""
        info: dict[str, Any] = {}
        if self.site:
            info["site"] = self.site
        # A registry written before locations were checked may hold NaN or Infinity:
        # the published JSON must stay JSON.
        info.update(finite_only(dict(self.location)))
        return info or None

    def as_dict(self, *, show_key: bool = False) -> dict[str, Any]:
        """A JSON-friendly dict; the key only with ``show_key``."""
        out: dict[str, Any] = {
            "device": self.hex_id,
            "device_id": self.device_id,
            "kind": self.kind,
            "name": self.name,
            "site": self.site,
            "location": dict(self.location),
            "last_fcnt": self.last_fcnt,
            "last_seen": self.last_seen,
            "battery": self.battery,
            "alarms": list(self.alarms),
            "interval_s": self.interval_s,
        }
        if show_key:
            out["key"] = self.key.hex()
        return out


def finite_only(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_only(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Accepted:
    """One verified, deduplicated message ready to spool.

    Either ``reading`` is given (``payload`` is then its JSON built with
    ``epoch``, or empty; the spool rebuilds it if the device's epoch is not
    that one any more, and stores it deflated), or ``topic`` and ``payload``
    are the finished message, stored as they are.
    """

    device_id: int
    fcnt: int
    kind: str
    topic: str             # full MQTT topic, built by message.topic()
    payload: bytes         # JSON bytes of a finished message (b"" with a reading)
    alarm: bool            # any alarm/fault bit set -> evicted last
    received_at: float     # unix seconds
    reading: Reading | None = None
    retain: bool = False   # published retained (state, not an event)
    epoch: int = 0         # the epoch ``payload`` names (with a reading)


class Row(NamedTuple):
    """One spooled message as the forwarder reads it; ``row_id`` is what ack() takes."""

    row_id: int
    device_id: int
    fcnt: int
    kind: str
    topic: str
    payload: bytes
    alarm: bool
    received_at: float
    retain: bool = False


class Counters:
    """Integer counters, global and per source, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = defaultdict(int)
        self._rejected: dict[str, int] = defaultdict(int)
        self._sources: dict[str, dict[str, int]] = {}
        self._source_rejected: dict[str, dict[str, int]] = {}

    def inc(self, name: str, source: str | None = None, n: int = 1, *,
            total: bool = True) -> None:
        """Add ``n`` to counter ``name`` and to the source's own counter.

        ``total=False`` counts for the source only (a frame heard by two sources
        is accepted once in total but once for each source).
        """
        with self._lock:
            if total:
                self._totals[name] += n
            if source is not None:
                src = self._sources.setdefault(source, defaultdict(int))
                src[name] += n

    def reject(self, reason: str, source: str | None = None, n: int = 1) -> None:
        """Count a rejected frame by reason."""
        with self._lock:
            self._totals["rejected"] += n
            self._rejected[reason] += n
            if source is not None:
                src = self._sources.setdefault(source, defaultdict(int))
                src["rejected"] += n
                rej = self._source_rejected.setdefault(source, defaultdict(int))
                rej[reason] += n

    def get(self, name: str) -> int:
        """One global counter."""
        with self._lock:
            return self._totals.get(name, 0)

    def rejected(self, reason: str) -> int:
        """Rejections for one reason."""
        with self._lock:
            return self._rejected.get(reason, 0)

    def snapshot(self) -> dict[str, Any]:
        """A copy: {"totals", "rejected", "sources": {name: {..., "rejected_by_reason"}}}."""
        with self._lock:
            sources: dict[str, Any] = {}
            for name, src in self._sources.items():
                entry: dict[str, Any] = dict(src)
                entry["rejected_by_reason"] = dict(self._source_rejected.get(name, {}))
                sources[name] = entry
            return {"totals": dict(self._totals), "rejected": dict(self._rejected),
                    "sources": sources}

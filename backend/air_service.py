"""The air-quality index inside ``knute backend``: from stored readings to retained topics.

``AirIndexer.handle(doc)`` runs after an ``air_quality`` reading was stored.
When the reading opens a new hour of its station, the hour before it is
closed: the station's index for that hour, then its area's, are computed
from the stored readings (``backend.air_qc`` and ``backend.air_index``, pure)
and published retained on ``<prefix>/air/index/station/<device>`` and
``<prefix>/air/index/area/<area>``. Hours are reading time (``received_at``),
not wall-clock time, so a replay or a simulation gives the same indexes; the
documents carry ``valid_until`` for consumers to notice silence.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from knute.backend import air_index
from knute.backend.air_index import HOUR_S, SCALES, Index, Scale
from knute.backend.air_qc import Checked, Qc, check, from_doc
from knute.backend.config import AirArea, Config
from knute.backend.hours import parse_utc
from knute.backend.store import SqlStore

AIR = "air_quality"
BACK_S = 25 * HOUR_S        # a 24-hour window before the hour, and the hour itself
NODE_INTERVAL_S = 600       # the air node's default: how far back stuck_readings reach
CACHE_HOURS = 3             # station indexes kept for the hours still being closed

Publish = Callable[[str, Mapping[str, Any]], None]


def qc_of(config: Config) -> Qc:
    """The QC thresholds of ``[air]``."""
    return Qc(kappa=config.air_kappa, rh_from=config.air_rh_from, rh_fog=config.air_rh_fog,
              max_correction=config.air_max_correction,
              stuck_readings=config.air_stuck_readings, stuck_range=config.air_stuck_range,
              disagree_abs=config.air_disagree_abs, disagree_rel=config.air_disagree_rel)


def scales_of(config: Config) -> dict[str, Scale]:
    """Both scales with ``[air] pm_averaging`` applied, the primary one first."""
    names = [config.air_scale] + [n for n in SCALES if n != config.air_scale]
    return {n: air_index.with_pm_averaging(SCALES[n], config.air_pm_averaging) for n in names}


class AirIndexes:
    """Computes station and area indexes from a store (shared by the consumer and the page)."""

    def __init__(self, config: Config, store: SqlStore) -> None:
        self.config = config
        self.store = store
        self.qc = qc_of(config)
        self.scales = scales_of(config)
        self.primary = self.scales[config.air_scale]
        self.area_of = {s: a for a in config.air_areas for s in a.stations}
        # What a station's index reads: the 24-hour window with 24h averaging, else
        # the hour and the stuck check's readings before it (at least two hours).
        stuck_s = max(2 * HOUR_S, config.air_stuck_readings * NODE_INTERVAL_S)
        self.back_s = BACK_S if config.air_pm_averaging == "24h" else HOUR_S + stuck_s
        self.cache: dict[tuple[str, int], Index] = {}
        self.newest = 0

    def checked(self, device: str, start: float, end: float) -> list[Checked]:
        """``device``'s readings received in [start, end), checked, oldest first."""
        out = []
        for t, payload in self.store.payloads(device, start, end):
            doc = json.loads(payload)
            if doc.get("kind") == AIR:
                out.append(check(from_doc(doc, t), self.qc))
        return out

    def station(self, device: str, hour: int) -> Index:
        """The index of station ``device`` for the hour starting at ``hour`` (a copy).

        Computed once per station and hour: asked for after the hour is over
        (by reading time), its readings are all in. The last ``CACHE_HOURS``
        hours are kept; the caller may change the copy it gets.
        """
        key = (device, hour)
        if key not in self.cache:
            readings = self.checked(device, hour + HOUR_S - self.back_s, hour + HOUR_S)
            index = air_index.station_index(device, readings, hour, self.primary, self.qc,
                                            self.config.air_min_readings)
            area = self.area_of.get(device)
            index.area = area.name if area else None
            self.cache[key] = index
            if hour > self.newest:          # a new hour: forget the ones long closed
                self.newest = hour
                self.cache = {k: v for k, v in self.cache.items()
                              if k[1] > hour - CACHE_HOURS * HOUR_S}
        return copy.deepcopy(self.cache[key])

    def area(self, area: AirArea, hour: int) -> tuple[Index, list[Index]]:
        """The index of ``area`` for the hour at ``hour`` and its stations' indexes."""
        stations = [self.station(d, hour) for d in area.stations]
        return air_index.area_index(area.name, stations, hour, self.qc), stations

    def document(self, index: Index, now: float) -> dict[str, Any]:
        """The retained document of ``index``."""
        return air_index.document(index, self.config.air_scale, self.scales, now,
                                  self.config.air_stale_after_s)


class AirIndexer:
    """Publishes a station's and its area's index each time one of its hours closes."""

    def __init__(self, config: Config, store: SqlStore, publish: Publish,
                 clock: Callable[[], float]) -> None:
        self.indexes = AirIndexes(config, store)
        self.config = config
        self.publish = publish
        self.clock = clock
        self.closed: dict[str, int] = {}        # device -> last hour published

    def handle(self, doc: Mapping[str, Any]) -> None:
        """After ``doc`` (an air reading) was stored: close its station's last hour."""
        device = str(doc["device"])
        t = parse_utc(doc["received_at"])
        opened = int(t) - int(t) % HOUR_S                  # the reading's hour
        hour = opened - HOUR_S                              # the hour it closes
        if hour <= self.closed.get(device, hour - HOUR_S):
            return
        if device not in self.closed:
            # First reading of the station in this process: close the hour before it
            # only if this reading is the first of its hour (else it is closed already).
            previous = self.indexes.store.previous_received(device, t)
            if previous is None or previous >= opened:
                self.closed[device] = hour
                return
        self.closed[device] = hour
        now = self.clock()
        area = self.indexes.area_of.get(device)
        if area is None:
            self._publish(self.indexes.station(device, hour), now)
            return
        area_index, stations = self.indexes.area(area, hour)
        for station in stations:
            station.area = area.name
            if station.subject == device:
                self._publish(station, now)
        self._publish(area_index, now)

    def _publish(self, index: Index, now: float) -> None:
        self.publish(air_index.topic(self.config.prefix, index),
                     self.indexes.document(index, now))

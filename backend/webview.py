"""What the backend's web page shows, as JSON documents (read-only queries on the store).

Each section of the page (``backend.page``) is rendered from one of these
documents, and each document is also served as it is under ``/api/...``
(``backend.web``), so the page and the JSON behind it cannot disagree.

Times in the documents are ISO 8601 UTC, as in the MQTT contract; days and
nights are local dates in the configured time zone (``water.timezone``),
because a district's day and its 02:00-04:00 night window are local.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from knute.backend import analytics, queries
from knute.backend.analytics import KNOWN
from knute.backend.config import Config, District
from knute.backend.hours import HOUR_S, format_hour
from knute.backend.service import WATER, iso
from knute.backend.store import SqlStore

SILENT_SHOWN = 200      # the page lists this many silent meters; /api/silent lists all


def _local_midnight(day: date, config: Config) -> int:
    """Unix time at which local date ``day`` begins."""
    return int(datetime(day.year, day.month, day.day, tzinfo=config.timezone).timestamp())


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class View:
    """The page's documents, read from ``store`` with the backend's ``config``."""

    def __init__(self, config: Config, store: SqlStore) -> None:
        self.config = config
        self.store = store

    # -- the whole page ------------------------------------------------------

    def summary(self, now: float) -> dict[str, Any]:
        """Figures for the page's head: readings, meters, open alerts, silent meters."""
        kinds = self.store.kinds()
        open_alerts = list(self.store.alerts("open"))
        return {
            "generated_at": iso(now),
            "timezone": str(self.config.timezone),
            "readings": self.store.count_readings(),
            "meters": sum(1 for k in kinds.values() if k == WATER),
            "devices": len(kinds),
            "districts": len(self.config.districts),
            "alerts_open": len(open_alerts),
            "alerts_open_by_signal": _count_by(a["alert"] for a in open_alerts),
            "silent_meters": len(self.silent(now)),
            "counters": self.store.counters(),
        }

    # -- districts -----------------------------------------------------------

    def districts(self, days: int | None = None) -> list[dict[str, Any]]:
        """Every configured district (see ``district``)."""
        heard = self.store.last_heard()
        return [self.district(d, days, heard) for d in self.config.districts]

    def district_named(self, name: str, days: int | None = None) -> dict[str, Any] | None:
        """The district called ``name``, or None."""
        for district in self.config.districts:
            if district.name == name:
                return self.district(district, days, self.store.last_heard())
        return None

    def district(self, district: District, days: int | None,
                 heard: dict[str, float]) -> dict[str, Any]:
        """Daily balances and the night-flow trend of the last ``days`` local days.

        The days end with the local date of the newest reading of any of the
        district's meters (so a store of old data still shows its days).
        """
        days = days or self.config.web_days
        meters = (*district.inflow, *district.outflow, *district.households)
        times = [heard[d] for d in meters if d in heard]
        newest = max(times) if times else None
        daily: list[dict[str, Any]] = []
        nights: list[dict[str, Any]] = []
        if newest is not None:
            # Up to the newest reading, which closes the hour before it; the last day
            # is the one that hour belongs to (complete when the reading came at midnight).
            end = int(newest) - int(newest) % HOUR_S
            last_day = analytics.local_hour(end - HOUR_S, self.config.timezone).date()
            first_day = last_day - timedelta(days=days - 1)
            start = _local_midnight(first_day, self.config)
            balances = self.balances(district, start, end)
            daily = self._daily(balances)
            nights = self._nights(district, balances, first_day)
        alert = self.store.alert(f"district_leak/{district.name}")
        return {
            "name": district.name,
            "inflow": list(district.inflow),
            "outflow": list(district.outflow),
            "households": len(district.households),
            "properties": district.properties,
            "unheard": [d for d in meters if d not in heard],
            "last_heard": None if newest is None else iso(newest),
            "days": daily,
            "nights": nights,
            "allowance_l_h": round(district.properties
                                   * self.config.night_use_l_per_property_h, 1),
            "leak_threshold_l_h": self.config.district_leak_l_h,
            "leak_alert": None if alert is None else alert.get("state"),
        }

    def balances(self, district: District, start: int, end: int) -> list[analytics.Balance]:
        """The district's hourly balances in [start, end), households summed by the store.

        ``queries.district_balances``: the same balances as
        ``analytics.district_balance`` hour by hour (the tests hold the two
        equal), without reading every household's hours into Python: a page
        load of a district of thousands of meters costs one aggregate query
        instead of one query and one object per meter-hour.
        """
        return queries.district_balances(self.store, district, start, end)

    def _daily(self, balances: list[analytics.Balance]) -> list[dict[str, Any]]:
        by_day: dict[date, list[analytics.Balance]] = {}
        for balance in balances:
            local = analytics.local_hour(balance.hour, self.config.timezone)
            by_day.setdefault(local.date(), []).append(balance)
        out: list[dict[str, Any]] = []
        for day, hours in sorted(by_day.items()):
            known = [b for b in hours if b.loss_l is not None]
            n = len(hours)
            if not out and not known and all(b.missing == 1 for b in hours):
                continue        # days before the district's first data
            out.append({
                "date": day.isoformat(),
                "hours": n,
                "bulk_hours": len(known),
                "inflow_l": _round(sum(b.inflow_l or 0.0 for b in known)) if known else None,
                "outflow_l": _round(sum(b.outflow_l or 0.0 for b in known)) if known else None,
                "households_l": _round(sum(b.households_l for b in hours)),
                "loss_l": _round(sum(b.loss_l or 0.0 for b in known)) if known else None,
                "measured": round(sum(b.measured for b in hours) / n, 3),
                "estimated": round(sum(b.estimated for b in hours) / n, 3),
                "missing": round(sum(b.missing for b in hours) / n, 3),
                # every hour of the local day (23 or 25 on DST days), each complete
                "complete": n == self._day_hours(day) and all(b.complete for b in hours),
            })
        return out

    def _day_hours(self, day: date) -> int:
        return (_local_midnight(day + timedelta(days=1), self.config)
                - _local_midnight(day, self.config)) // HOUR_S

    def _nights(self, district: District, balances: list[analytics.Balance],
                first_day: date) -> list[dict[str, Any]]:
        """MNF leakage per night, from the inlet's night windows (as the alert does)."""
        by_hour = {b.hour: b for b in balances}
        if not by_hour:
            return []
        inlet = district.inflow[0]
        start, end = min(by_hour), max(by_hour) + HOUR_S
        out = []
        for night in analytics.nights(self.store.hours(inlet, start, end), self.config.timezone):
            if night.night < first_day:
                continue
            window = [by_hour[h.start] for h in night.hours if h.start in by_hour]
            leak = (analytics.mnf_leakage(night.night, window, district.properties,
                                          self.config.night_use_l_per_property_h)
                    if night.min_l_h is not None else None)
            out.append({
                "night": night.night.isoformat(),
                "mnf_l_h": None if leak is None else _round(leak.mnf_l_h),
                "leakage_l_h": None if leak is None else _round(leak.leakage_l_h),
                "hour": None if leak is None else format_hour(leak.hour),
            })
        return out

    # -- alerts --------------------------------------------------------------

    def alerts(self, state: str | None = "open") -> list[dict[str, Any]]:
        """Alert documents (as published on MQTT), newest opened first."""
        out = [{k: v for k, v in a.items() if k != "_state"}
               for a in self.store.alerts(state)
               if a.get("opened_at") is not None]
        out.sort(key=lambda a: str(a.get("opened_at") or ""), reverse=True)
        return out

    # -- meters --------------------------------------------------------------

    def meters(self) -> list[dict[str, Any]]:
        """Every device heard: kind, last heard and district."""
        kinds = self.store.kinds()
        districts = self._district_of()
        return [{"device": d, "kind": kinds.get(d), "last_heard": iso(t),
                 "district": districts.get(d)}
                for d, t in sorted(self.store.last_heard().items())]

    def meter(self, device: str, days: int | None = None) -> dict[str, Any] | None:
        """The hourly consumption of ``device`` over the last ``days`` days, or None.

        The span ends with the hour of the meter's newest reading; hours
        absent from ``hours`` are missing (counted in ``missing_hours``).
        """
        heard = self.store.last_heard().get(device)
        if heard is None:
            return None
        days = days or self.config.web_days
        end = int(heard) - int(heard) % HOUR_S      # a reading closes the hour before it
        start = end - days * 24 * HOUR_S
        hours = self.store.hours(device, start, end)
        if hours:       # the span begins with the meter's first hour in it
            start = hours[0].start
        qualities = _count_by(h.quality for h in hours)
        return {
            "device": device,
            "kind": self.store.kinds().get(device),
            "district": self._district_of().get(device),
            "last_heard": iso(heard),
            "from": format_hour(start),
            "to": format_hour(end),
            "hours": [{"hour": format_hour(h.start), "litres": h.litres, "quality": h.quality}
                      for h in hours],
            "total_l": _round(sum(h.litres for h in hours)),
            "measured_hours": sum(1 for h in hours if h.quality in KNOWN),
            "estimated_hours": qualities.get("estimated", 0),
            "missing_hours": (end - start) // HOUR_S - len(hours),
            "index_steps": [{"hour": format_hour(h), "index_before_l": b, "index_after_l": a}
                            for h, b, a in self.store.index_steps(device)],
            "alerts": [a for a in self.alerts("open") if a.get("subject") == device],
        }

    def default_meter(self) -> str | None:
        """The meter the page shows when none is asked for.

        The subject of the newest open meter alert (silent ones aside), else the
        first heard household of the first district, else the first water meter.
        """
        for alert in self.alerts("open"):
            if alert.get("subject_kind") == "meter" and alert.get("alert") != "silent":
                return str(alert["subject"])
        kinds = self.store.kinds()
        for district in self.config.districts:
            for device in district.households:
                if device in kinds:
                    return device
        water = sorted(d for d, k in kinds.items() if k == WATER)
        return water[0] if water else None

    def silent(self, now: float) -> list[dict[str, Any]]:
        """Water meters not heard for ``silent_after_intervals`` expected intervals."""
        kinds = self.store.kinds()
        heard = {d: t for d, t in self.store.last_heard().items() if kinds.get(d) == WATER}
        districts = self._district_of()
        silent = analytics.silent_meters(heard, now, self.config.expected_interval_s,
                                         self.config.silent_after_intervals)
        order = sorted(silent.items(), key=lambda item: (-item[1], item[0]))
        return [{"device": d, "last_heard": iso(heard[d]), "silent_for_h": round(s / 3600, 1),
                 "intervals": round(s / self.config.expected_interval_s, 1),
                 "district": districts.get(d)}
                for d, s in order]

    def _district_of(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for district in self.config.districts:
            for device in (*district.inflow, *district.outflow, *district.households):
                out.setdefault(device, district.name)
        return out


def _count_by(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))

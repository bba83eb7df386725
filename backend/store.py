"""The backend's stores: SQLite (embedded, the default) and PostgreSQL.

``SqlStore`` holds every query, written once in the SQL both databases speak
(``?`` placeholders, ``INSERT ... ON CONFLICT``); ``backend.store_sqlite.Store``
is the embedded SQLite file in WAL mode (schema version in ``user_version``)
and ``backend.store_pg.PgStore`` the database server. ``open_store(config)``
picks one from the configuration. The same tests run against both.

Tables (version 3):

- ``readings``: every reading once, keyed on its ``id`` (an opaque unique
  string), with the fields the series and the signals need and the payload.
- ``hours``: one hourly consumption series per meter (``device``, hour start
  in unix seconds, litres, quality), kept up to date reading by reading: the
  new reading's slots and anchors are merged into ``slots`` and ``anchors``
  (the winner of each hour, as ``backend.hours.rebuild`` picks it) and only
  the span between the anchors around them is filled again
  (``backend.hours.fill``).
- ``slots``, ``anchors``: the winning profile slot and index anchor per hour.
- ``index_steps``: where a meter's index went backwards.
- ``days``: daily totals of hours older than the hourly retention.
- ``meta``: the retention cut-off (readings received before it are refused).
- ``alerts``: every alert's state (open or closed) and its hysteresis state.
- ``counters``: what ingest counted (stored, duplicate, late, bad, ...).
- ``district_hours``: per district and hour, the sums of its households' hours
  (litres, known and estimated hours), kept at ingest from each change of an
  hour (``set_districts`` names the households; ``districts`` holds a digest of
  each district's list, and a district whose list changed is summed again from
  ``hours``). A district's balance then reads one row per hour instead of one
  per meter and hour.

A reading is stored and its meter's series updated in one transaction, so a
crash leaves either both or neither. Retention (``apply_retention``) deletes
raw readings after N days, turns hours older than M days into daily totals
and may delete daily totals after K days (docs/water.md, "Retention").

Why one module of ~670 lines: ``SqlStore`` is nearly all of it, and it is one
class on purpose: every query the backend asks is written here once, for both
databases, and one reading's write (the reading, its series' winners and hours,
the districts' rollup, the counters) is one transaction over the same tables.
What differs between the databases (connection, schema, migrations) is already
apart, in backend.store_sqlite and backend.store_pg; split further, the queries
of one transaction would sit in mixins that each declare the connection again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from knute.backend.hours import (
    ESTIMATED,
    INDEX,
    MEASURED,
    Hour,
    MeterReading,
    contribution,
    fill,
    meter_reading,
    parse_utc,
    span,
    stored_slot,
    wins,
)

if TYPE_CHECKING:
    from knute.backend.config import Config

SCHEMA_VERSION = 3
DAY_S = 86400
# A profile reaches 253 hours back (docs/mqtt.md): slots and anchors are kept
# this much longer than the raw readings, so a reading still accepted finds the
# anchors around every hour it can touch.
PROFILE_REACH_S = 11 * DAY_S
REUSED_ID_AFTER_S = 86400.0     # docs/mqtt.md: a reused id is weeks apart, a duplicate seconds


class StoreError(Exception):
    """The store cannot be used (newer schema, not a knute backend store)."""


@dataclass(frozen=True)
class Retention:
    """How long each kind of data is kept, in days (0: for ever).

    ``readings_days``: raw readings; ``hourly_days``: the hourly series (older
    hours become daily totals, by local day in ``timezone``); ``daily_days``:
    those daily totals.
    """

    readings_days: float = 0.0
    hourly_days: float = 0.0
    daily_days: float = 0.0
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


class Cursor(Protocol):
    """What a store's ``_x`` returns: sqlite3's and psycopg's cursors both fit."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


KNOWN_SQL = f"quality IN ('{MEASURED}', '{INDEX}')"


class SqlStore:
    """Readings, hourly series, alerts and counters in a SQL database.

    Subclasses give the connection (``_x``, ``_xm``), the transaction start and
    the schema; every query lives here, so both stores answer alike.
    """

    kind = "sql"
    #: exceptions that mean "the database cannot take this now" (leave the reading
    #: unacknowledged for redelivery)
    errors: tuple[type[BaseException], ...] = ()
    path = ""

    def __init__(self) -> None:
        self._depth = 0
        self.keep_from: float | None = None     # readings received before: expired
        self.hours_from = -(2**62)              # hours before: downsampled to days
        self.district_of: dict[str, tuple[str, ...]] = {}   # household -> its districts

    # -- what a subclass gives ------------------------------------------------

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    def _xm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _w(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A write whose result is not read: a server store may send it with the next batch."""
        self._x(sql, params)

    def _wm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``_xm`` whose result is not read (see ``_w``)."""
        self._xm(sql, rows)

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self, commit: bool) -> None:
        """COMMIT or ROLLBACK the outermost transaction."""
        self._x("COMMIT" if commit else "ROLLBACK")

    def _lock(self, name: str) -> None:
        """Serialize writers on ``name`` until the transaction ends (no-op where writes are)."""

    def _exclusive(self, table: str) -> None:
        """Inside a transaction: no other writer on ``table`` until it ends (SQLite: always)."""

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """``column IN (...)`` and its parameters."""
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def size_bytes(self, table: str) -> int:
        """Bytes the table ``table`` and its indexes take in the database."""
        raise NotImplementedError

    # -- transactions --------------------------------------------------------

    class _Tx:
        def __init__(self, store: SqlStore) -> None:
            self.store = store

        def __enter__(self) -> SqlStore:
            if self.store._depth == 0:
                self.store._begin()
            self.store._depth += 1
            return self.store

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self.store._depth -= 1
            if self.store._depth == 0:
                self.store._end(commit=exc_type is None)

    def transaction(self) -> SqlStore._Tx:
        """A write transaction (``with store.transaction():``).

        Nested ones join the outermost, which alone commits: a reading, its
        series and the alert states it moves are committed together, and
        another process writing the same store waits for the whole of it.
        """
        return SqlStore._Tx(self)

    def _begin_read(self) -> None:
        """Start a read-only transaction that sees one state of the database."""
        self._x("BEGIN")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction (``with store.snapshot():``): every query sees one state.

        The web page answers a request inside one, so a reading committed
        meanwhile shows in all of the answer or in none of it. Inside a
        transaction already, it joins that one.
        """
        if self._depth:
            yield
            return
        self._begin_read()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self._end(commit=True)

    def lock(self, name: str) -> None:
        """Inside a transaction: one writer at a time on ``name`` across processes."""
        self._lock(name)

    def _load_meta(self) -> None:
        meta = {str(n): float(v) for n, v in self._x("SELECT name, value FROM meta")}
        self.keep_from = meta.get("keep_from")
        self.hours_from = int(meta.get("hours_from", -(2**62)))

    def _set_meta(self, name: str, value: float) -> None:
        self._x("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                "SET value=excluded.value", (name, value))

    # -- readings ------------------------------------------------------------

    def add_reading(self, doc: Mapping[str, Any]) -> str:
        """Store one schema-valid reading; return what happened to it.

        ``stored``; ``late``: stored, but the meter already had a reading
        received later; ``duplicate``; ``expired``: received before the
        retention cut-off (its hours are no longer kept hour by hour). A water
        meter's hourly series is updated in the same transaction. An ``id``
        seen before is a duplicate, unless the two were received more than a
        day apart (an id reused after a counter reset, docs/mqtt.md): then it
        is stored under ``<id>@<received_at>`` and counted ``reused_id``.
        """
        key = str(doc["id"])
        received = parse_utc(doc["received_at"])
        device = str(doc["device"])
        with self.transaction():
            self._lock(f"device:{device}")
            if self.keep_from is not None and received < self.keep_from:
                self._count("expired")
                return "expired"
            # One round trip: this id's reading, and the meter's newest.
            seen, newest = self._x(
                "SELECT (SELECT received_at FROM readings WHERE id=?), "
                "(SELECT max(received_at) FROM readings WHERE device=?)",
                (key, device)).fetchone()
            if seen is not None:
                if abs(float(seen) - received) <= REUSED_ID_AFTER_S:
                    self._count("duplicate")
                    return "duplicate"
                key = f"{key}@{doc['received_at']}"
                if self._x("SELECT 1 FROM readings WHERE id=?", (key,)).fetchone():
                    self._count("duplicate")
                    return "duplicate"
                self._count("reused_id")
            index = doc.get("readings", {}).get("index", {}).get("value")
            reading = meter_reading(doc)
            self._w("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)",
                    (key, device, str(doc["kind"]), int(doc["fcnt"]), received, index,
                     json.dumps([slot.stored() for slot in reading.slots]),
                     json.dumps(doc.get("alarms", [])), json.dumps(doc, ensure_ascii=False)))
            if reading.slots or index is not None:
                self._update_series(device, MeterReading(key, received, reading.index_l,
                                                         reading.slots))
            late = newest is not None and float(newest) > received
            self._count("stored")
            if late:
                self._count("late")
            return "late" if late else "stored"

    def _winners(self, device: str, slots: Mapping[int, float], anchors: Mapping[int, float],
                 received: float, reading_id: str) -> list[int]:
        """Store the slots and anchors that beat the held ones for their hours; their hours.

        What both tables hold over the reading's hours is read in one query.
        """
        if not slots and not anchors:
            return []
        held: tuple[dict[int, tuple[float, str]], ...] = ({}, {})
        spans = [(min(v), max(v)) if v else (1, 0) for v in (slots, anchors)]
        for table, h, t, r in self._x(
                "SELECT 0, hour, received_at, reading_id FROM slots WHERE device=? AND hour>=? "
                "AND hour<=? UNION ALL SELECT 1, hour, received_at, reading_id FROM anchors "
                "WHERE device=? AND hour>=? AND hour<=?",
                (device, *spans[0], device, *spans[1])):
            held[int(table)][int(h)] = (float(t), str(r))
        touched = []
        for (table, column), values, kept in zip(
                (("slots", "litres"), ("anchors", "index_l")), (slots, anchors), held,
                strict=True):
            rows = [(device, h, v, received, reading_id) for h, v in sorted(values.items())
                    if wins(received, reading_id, kept.get(h))]
            self._wm(f"INSERT INTO {table} VALUES (?,?,?,?,?) ON CONFLICT (device, hour) DO "
                     f"UPDATE SET {column}=excluded.{column}, "
                     "received_at=excluded.received_at, reading_id=excluded.reading_id", rows)
            touched += [row[1] for row in rows]
        return touched

    def _update_series(self, device: str, reading: MeterReading) -> None:
        """Merge one reading into ``device``'s series; refill only the span it can move."""
        c = contribution(reading)
        touched = self._winners(device, c.slots, c.anchors, c.received_at, c.reading_id)
        if not touched:
            return
        before, after = self._x(
            "SELECT (SELECT max(hour) FROM anchors WHERE device=? AND hour<?), "
            "(SELECT min(hour) FROM anchors WHERE device=? AND hour>?)",
            (device, min(touched), device, max(touched))).fetchone()
        lo, hi = span(touched, None if before is None else int(before),
                      None if after is None else int(after))
        # One round trip for the span's winning slots (0), anchors (1) and hours (2).
        measured: dict[int, float] = {}
        anchors: list[tuple[int, float, str]] = []
        stored: dict[int, tuple[float, str]] = {}
        for table, h, v, text in self._x(
                "SELECT 0, hour, litres, '' FROM slots WHERE device=? AND hour>=? AND hour<? "
                "UNION ALL SELECT 1, hour, index_l, reading_id FROM anchors WHERE device=? "
                "AND hour>=? AND hour<=? UNION ALL SELECT 2, hour, litres, quality FROM hours "
                "WHERE device=? AND hour>=? AND hour<?",
                (device, lo, hi, device, lo, hi, device, lo, hi)):
            if table == 0:
                measured[int(h)] = float(v)
            elif table == 1:
                anchors.append((int(h), float(v), str(text)))
            else:
                stored[int(h)] = (float(v), str(text))
        anchors.sort()
        fresh, steps = fill(lo, hi, measured, anchors)
        # Hours already downsampled to daily totals are never written again (a
        # meter silent for months may have its anchor before that cut).
        lo = max(lo, self.hours_from)
        fresh = {h: v for h, v in fresh.items() if h >= lo}
        steps = [s for s in steps if s.at > lo]
        stored = {h: v for h, v in stored.items() if h >= lo}
        gone = [h for h in stored if h not in fresh]
        moved = [h for h in fresh.values() if stored.get(h.start) != (h.litres, h.quality)]
        self._wm("DELETE FROM hours WHERE device=? AND hour=?", [(device, h) for h in gone])
        self._wm("INSERT INTO hours VALUES (?,?,?,?) ON CONFLICT (device, hour) DO UPDATE "
                 "SET litres=excluded.litres, quality=excluded.quality",
                 [(device, h.start, h.litres, h.quality) for h in moved])
        if device in self.district_of:
            self._roll(device, {h: stored[h] for h in gone},
                       {h.start: stored.get(h.start) for h in moved}, moved)
        self._w("DELETE FROM index_steps WHERE device=? AND hour>? AND hour<=?",
                (device, lo, hi))
        self._wm("INSERT INTO index_steps VALUES (?,?,?,?,?)",
                 [(device, s.at, s.before_l, s.after_l, s.reading_id) for s in steps])

    def _roll(self, device: str, gone: Mapping[int, tuple[float, str]],
              replaced: Mapping[int, tuple[float, str] | None], moved: Sequence[Hour]) -> None:
        """Move ``device``'s districts' rollup by its hours' change (deleted, then written)."""
        delta: dict[int, list[float]] = {}

        def add(hour: int, litres: float, quality: str, sign: int) -> None:
            d = delta.setdefault(hour, [0.0, 0, 0])
            d[0] += sign * litres
            d[1 if quality != ESTIMATED else 2] += sign

        for hour, (litres, quality) in gone.items():
            add(hour, litres, quality, -1)
        for h in moved:
            old = replaced.get(h.start)
            if old is not None:
                add(h.start, old[0], old[1], -1)
            add(h.start, h.litres, h.quality, 1)
        self._wm("INSERT INTO district_hours VALUES (?,?,?,?,?) ON CONFLICT (district, hour) "
                 "DO UPDATE SET litres=district_hours.litres+excluded.litres, "
                 "known=district_hours.known+excluded.known, "
                 "estimated=district_hours.estimated+excluded.estimated",
                 [(district, hour, d[0], int(d[1]), int(d[2]))
                  for district in self.district_of[device] for hour, d in sorted(delta.items())])

    # -- districts -----------------------------------------------------------

    def set_districts(self, districts: Mapping[str, Sequence[str]]) -> list[str]:
        """Name each district's households (name -> device ids); return those summed again.

        From here on this store keeps the district rollup at ingest. A district
        whose list differs from the one the rollup was kept for (or that has no
        rollup yet) is summed again from ``hours``; a district no longer named
        loses its rollup.
        """
        rebuilt = []
        with self.transaction():
            self._lock("districts")
            held = {str(n): str(d) for n, d in self._x("SELECT name, digest FROM districts")}
            if any(held.get(n) != district_digest(h) for n, h in districts.items()):
                # A consumer moving the rollup meanwhile would be lost or counted twice.
                self._exclusive("district_hours")
            for name in held.keys() - districts.keys():
                self._w("DELETE FROM district_hours WHERE district=?", (name,))
                self._w("DELETE FROM districts WHERE name=?", (name,))
            for name, households in sorted(districts.items()):
                digest = district_digest(households)
                if held.get(name) == digest:
                    continue
                self._w("DELETE FROM district_hours WHERE district=?", (name,))
                totals = (self.household_totals(sorted(set(households)), -(2**62), 2**62)
                          if households else {})
                self._wm("INSERT INTO district_hours VALUES (?,?,?,?,?)",
                         [(name, h, v, k, e) for h, (v, k, e) in sorted(totals.items())])
                self._w("INSERT INTO districts VALUES (?,?) ON CONFLICT (name) DO UPDATE "
                        "SET digest=excluded.digest", (name, digest))
                rebuilt.append(name)
        of: dict[str, list[str]] = {}
        for name, households in districts.items():
            for device in set(households):
                of.setdefault(device, []).append(name)
        self.district_of = {d: tuple(sorted(names)) for d, names in of.items()}
        return rebuilt

    def district_totals(self, name: str, households: Sequence[str], start: int,
                        end: int) -> dict[int, tuple[float, int, int]]:
        """``household_totals`` of district ``name``: from its rollup when kept for ``households``.

        Else (no rollup, or one kept for another list) the households' hours are
        summed as ``household_totals`` does.
        """
        row = self._x("SELECT digest FROM districts WHERE name=?", (name,)).fetchone()
        if row is None or str(row[0]) != district_digest(households):
            return self.household_totals(households, start, end)
        return {int(h): (float(v), int(k), int(e)) for h, v, k, e in self._x(
            "SELECT hour, litres, known, estimated FROM district_hours WHERE district=? "
            "AND hour>=? AND hour<? AND (known<>0 OR estimated<>0)", (name, start, end))}

    def readings_of(self, device: str) -> list[MeterReading]:
        """Every stored reading of ``device`` in the series' form, oldest first."""
        return [MeterReading(str(key), float(received), None if index is None else float(index),
                             tuple(stored_slot(item) for item in json.loads(slots)))
                for key, received, index, slots in self._x(
                    "SELECT id, received_at, index_l, slots FROM readings WHERE device=? "
                    "ORDER BY received_at, id", (device,))]

    def payloads(self, device: str, start: float, end: float) -> list[tuple[float, str]]:
        """(received_at, payload JSON) of ``device``'s readings received in [start, end)."""
        return [(float(t), str(p)) for t, p in self._x(
            "SELECT received_at, payload FROM readings WHERE device=? AND received_at>=? "
            "AND received_at<? ORDER BY received_at", (device, start, end)).fetchall()]

    def previous_received(self, device: str, before: float) -> float | None:
        """When ``device``'s newest reading received before ``before`` arrived, or None."""
        row = self._x("SELECT max(received_at) FROM readings WHERE device=? AND "
                      "received_at<?", (device, before)).fetchone()
        return None if row[0] is None else float(row[0])

    def count_readings(self) -> int:
        """How many readings are stored."""
        return int(self._x("SELECT count(*) FROM readings").fetchone()[0])

    def last_heard(self) -> dict[str, float]:
        """device -> unix time of its newest reading."""
        return {str(d): float(t) for d, t in self._x(
            "SELECT device, max(received_at) FROM readings GROUP BY device")}

    def kinds(self) -> dict[str, str]:
        """device -> kind, for every device with a reading."""
        return {str(d): str(k) for d, k in self._x(
            "SELECT device, max(kind) FROM readings GROUP BY device")}

    # -- series --------------------------------------------------------------

    def hours(self, device: str, start: int | None = None, end: int | None = None) -> list[Hour]:
        """The hourly series of ``device``, optionally within [start, end)."""
        lo = -(2**62) if start is None else start
        hi = 2**62 if end is None else end
        return [Hour(int(h), float(v), str(q)) for h, v, q in self._x(
            "SELECT hour, litres, quality FROM hours WHERE device=? AND hour>=? AND hour<? "
            "ORDER BY hour", (device, lo, hi))]

    def hour_sums(self, devices: Sequence[str], start: int, end: int
                  ) -> dict[int, tuple[float, int, int]]:
        """hour -> (litres, measured or index hours, estimated hours) summed over ``devices``.

        For hours in [start, end); a meter without a value that hour adds
        nothing. The web page's name for ``household_totals``: one query.
        """
        return self.household_totals(devices, start, end)

    def hours_of(self, devices: Sequence[str] | None, start: int | None = None,
                 end: int | None = None) -> Iterator[tuple[str, Hour]]:
        """(device, hour) of ``devices`` (every meter if None) in [start, end), by device."""
        lo = -(2**62) if start is None else start
        hi = 2**62 if end is None else end
        where, params = ("1=1", []) if devices is None else self._in("device", devices)
        for d, h, v, q in self._x(
                f"SELECT device, hour, litres, quality FROM hours WHERE {where} AND hour>=? "
                "AND hour<? ORDER BY device, hour", (*params, lo, hi)):
            yield str(d), Hour(int(h), float(v), str(q))

    def household_totals(self, devices: Sequence[str], start: int,
                         end: int) -> dict[int, tuple[float, int, int]]:
        """hour -> (Σ litres, hours known, hours estimated) of ``devices`` in [start, end)."""
        if not devices:
            return {}
        where, params = self._in("device", devices)
        return {int(h): (float(v), int(k), int(e)) for h, v, k, e in self._x(
            f"SELECT hour, sum(litres), sum(CASE WHEN {KNOWN_SQL} THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN quality='{ESTIMATED}' THEN 1 ELSE 0 END) FROM hours "
            f"WHERE {where} AND hour>=? AND hour<? GROUP BY hour", (*params, start, end))}

    def window_minimums(self, start: int, end: int, devices: Sequence[str] | None = None
                        ) -> dict[str, tuple[float | None, int]]:
        """device -> (lowest known hour's litres, known hours) over [start, end)."""
        where, params = ("1=1", []) if devices is None else self._in("device", devices)
        return {str(d): (None if m is None else float(m), int(k)) for d, m, k in self._x(
            f"SELECT device, min(CASE WHEN {KNOWN_SQL} THEN litres END), "
            f"sum(CASE WHEN {KNOWN_SQL} THEN 1 ELSE 0 END) FROM hours "
            f"WHERE {where} AND hour>=? AND hour<? GROUP BY device", (*params, start, end))}

    def days(self, device: str) -> list[tuple[int, float, int, int]]:
        """(local day start, litres, hours known, hours estimated) kept for ``device``."""
        return [(int(d), float(v), int(k), int(e)) for d, v, k, e in self._x(
            "SELECT day, litres, hours_known, hours_estimated FROM days WHERE device=? "
            "ORDER BY day", (device,))]

    def index_steps(self, device: str) -> list[tuple[int, float, float]]:
        """(hour, index before, index after) where ``device``'s index went backwards."""
        return [(int(h), float(b), float(a)) for h, b, a in self._x(
            "SELECT hour, before_l, after_l FROM index_steps WHERE device=? ORDER BY hour",
            (device,))]

    # -- retention -----------------------------------------------------------

    def apply_retention(self, now: float, policy: Retention) -> dict[str, int]:
        """Delete and downsample what ``policy`` no longer keeps; return rows touched.

        Raw readings received before ``now - readings_days`` are deleted (and
        later arrivals that old are refused as ``expired``); slots and anchors
        go once they are ``PROFILE_REACH_S`` older than that, keeping each
        meter's newest anchor before the cut so the series can still be filled
        after it. Hours before the local midnight ``hourly_days`` ago become
        daily totals (``days``); those go after ``daily_days``. 0 keeps for ever.
        """
        done = {"readings": 0, "hours": 0, "days_added": 0, "days": 0}
        with self.transaction():
            self._lock("retention")
            if policy.readings_days > 0:
                cut = now - policy.readings_days * DAY_S
                done["readings"] = self._delete("DELETE FROM readings WHERE received_at<?",
                                                (cut,))
                prune = int(cut - PROFILE_REACH_S)
                for table in ("slots", "anchors"):
                    self._x(f"DELETE FROM {table} WHERE hour<(SELECT max(a.hour) FROM anchors "
                            f"a WHERE a.device={table}.device AND a.hour<=?)", (prune,))
                self._set_meta("keep_from", cut)
                self.keep_from = cut
            if policy.hourly_days > 0:
                cut_hour = _local_midnight(now - policy.hourly_days * DAY_S, policy.timezone)
                done["days_added"] = self._downsample(cut_hour, policy.timezone)
                done["hours"] = self._delete("DELETE FROM hours WHERE hour<?", (cut_hour,))
                self._x("DELETE FROM district_hours WHERE hour<?", (cut_hour,))
                self._x("DELETE FROM index_steps WHERE hour<?", (cut_hour,))
                self._set_meta("hours_from", cut_hour)
                self.hours_from = cut_hour
            if policy.daily_days > 0:
                cut_day = _local_midnight(now - policy.daily_days * DAY_S, policy.timezone)
                done["days"] = self._delete("DELETE FROM days WHERE day<?", (cut_day,))
        return done

    def _delete(self, sql: str, params: Sequence[Any]) -> int:
        return max(0, int(self._x(sql, params).rowcount))

    def _downsample(self, cut_hour: int, tz: ZoneInfo) -> int:
        """Add the hours before ``cut_hour`` to the daily totals of their local day."""
        totals: dict[tuple[str, int], list[float]] = {}
        for device, hour, litres, quality in self._x(
                "SELECT device, hour, litres, quality FROM hours WHERE hour<?", (cut_hour,)):
            day = _local_midnight(float(hour), tz)
            total = totals.setdefault((str(device), day), [0.0, 0, 0])
            total[0] += float(litres)
            total[1 if quality != ESTIMATED else 2] += 1
        self._xm("INSERT INTO days VALUES (?,?,?,?,?) ON CONFLICT (device, day) DO UPDATE "
                 "SET litres=days.litres+excluded.litres, "
                 "hours_known=days.hours_known+excluded.hours_known, "
                 "hours_estimated=days.hours_estimated+excluded.hours_estimated",
                 [(d, day, v[0], int(v[1]), int(v[2])) for (d, day), v in totals.items()])
        return len(totals)

    # -- alerts and counters -------------------------------------------------

    def alert(self, key: str) -> dict[str, Any] | None:
        """The stored document of alert ``key``, or None."""
        row = self._x("SELECT document FROM alerts WHERE key=?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def alerts_by_key(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """key -> stored document of each alert of ``keys`` that exists, in one query."""
        if not keys:
            return {}
        where, params = self._in("key", keys)
        return {str(k): dict(json.loads(d)) for k, d in self._x(
            f"SELECT key, document FROM alerts WHERE {where}", params)}

    def put_alert(self, key: str, document: Mapping[str, Any]) -> None:
        """Store alert ``key``'s document (its ``state`` is indexed)."""
        with self.transaction():
            self._w("INSERT INTO alerts VALUES (?,?,?) ON CONFLICT (key) DO UPDATE SET "
                    "state=excluded.state, document=excluded.document",
                    (key, str(document.get("state", "")), json.dumps(document)))

    def alerts(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        """Every alert document, or those in ``state`` (``open``/``closed``)."""
        query = "SELECT document FROM alerts"
        rows = (self._x(query + " WHERE state=? ORDER BY key", (state,))
                if state else self._x(query + " ORDER BY key"))
        for (document,) in rows.fetchall():
            yield dict(json.loads(document))

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to counter ``name``."""
        with self.transaction():
            self._count(name, by)

    def _count(self, name: str, by: int = 1) -> None:
        self._w("INSERT INTO counters VALUES (?,?) ON CONFLICT (name) DO UPDATE "
                "SET value=counters.value+excluded.value", (name, by))

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        return {str(n): int(v) for n, v in self._x("SELECT name, value FROM counters")}


def district_digest(households: Sequence[str]) -> str:
    """A digest of a district's household list (order and repeats do not count)."""
    return hashlib.sha256(",".join(sorted(set(households))).encode()).hexdigest()


def _local_midnight(t: float, tz: ZoneInfo) -> int:
    """Unix seconds of the local midnight that starts the day holding ``t``."""
    local = datetime.fromtimestamp(t, UTC).astimezone(tz)
    return int(datetime(local.year, local.month, local.day, tzinfo=tz).timestamp())


def local_days(first: float, count: int, tz: ZoneInfo) -> list[tuple[int, int]]:
    """[start, end) of ``count`` local days from the one holding ``first`` (23-25 h each)."""
    start = datetime.fromtimestamp(_local_midnight(first, tz), tz)
    out = []
    for k in range(count):
        day = (start + timedelta(days=k)).replace(tzinfo=None)
        a = int(day.replace(tzinfo=tz).timestamp())
        b = int((day + timedelta(days=1)).replace(tzinfo=tz).timestamp())
        out.append((a, b))
    return out


def open_store(config: Config) -> SqlStore:
    """The store ``config`` names: PostgreSQL when ``[store] url`` is set, else SQLite."""
    if config.store_url:
        from knute.backend.store_pg import PgStore

        return PgStore(config.store_url)
    from knute.backend.store_sqlite import Store

    return Store(config.store_path)

"""The embedded store: SQLite in WAL mode, schema versioned with ``user_version``.

Tables (version 1):

- ``readings``: every reading once, keyed on its ``id`` (an opaque unique
  string), with the fields the series and the signals need and the payload.
- ``hours``: one hourly consumption series per meter (``device``, hour start
  in unix seconds, litres, quality), rebuilt from the meter's readings by
  ``backend.hours.rebuild`` whenever one of its readings arrives.
- ``index_steps``: where a meter's index went backwards.
- ``alerts``: every alert's state (open or closed) and its hysteresis state.
- ``counters``: what ingest counted (stored, duplicate, late, bad, ...).

A reading is stored and its meter's series rebuilt in one transaction, so a
crash leaves either both or neither.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from knute.backend.hours import Hour, MeterReading, Series, Slot, meter_reading, parse_utc, rebuild

SCHEMA_VERSION = 1
REUSED_ID_AFTER_S = 86400.0     # docs/mqtt.md: a reused id is weeks apart, a duplicate seconds

_SCHEMA_V1 = """
CREATE TABLE readings (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    fcnt INTEGER NOT NULL,
    received_at REAL NOT NULL,
    index_l REAL,
    slots TEXT NOT NULL,
    alarms TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX readings_device ON readings (device, received_at);
CREATE TABLE hours (
    device TEXT NOT NULL,
    hour INTEGER NOT NULL,
    litres REAL NOT NULL,
    quality TEXT NOT NULL CHECK (quality IN ('measured', 'index', 'estimated')),
    PRIMARY KEY (device, hour)
) WITHOUT ROWID;
CREATE TABLE index_steps (
    device TEXT NOT NULL,
    hour INTEGER NOT NULL,
    before_l REAL NOT NULL,
    after_l REAL NOT NULL,
    reading_id TEXT NOT NULL,
    PRIMARY KEY (device, hour)
);
CREATE TABLE alerts (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class StoreError(Exception):
    """The store file cannot be used (newer schema, not a knute backend store)."""


class Store:
    """One SQLite file holding readings, hourly series, alerts and counters."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {version} is newer than "
                             f"this knute ({SCHEMA_VERSION})")
        if version == 0:
            tables = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"{self.path}: not a knute backend store (has tables, "
                                 "no version)")
            with self.transaction():
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db
            self.outer = False

        def __enter__(self) -> sqlite3.Connection:
            self.outer = not self.db.in_transaction
            if self.outer:
                self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if self.outer:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> Store._Tx:
        """A write transaction (``with store.transaction():``).

        Nested ones join the outermost, which alone commits: a reading, its
        series and the alert states it moves are committed together, and
        another process writing the same file waits for the whole of it.
        """
        return Store._Tx(self.db)

    # -- readings ------------------------------------------------------------

    def add_reading(self, doc: Mapping[str, Any]) -> str:
        """Store one schema-valid reading; return ``stored``, ``duplicate`` or ``late``.

        ``late``: stored, but the meter already had a reading received later.
        A water meter's hourly series is rebuilt in the same transaction. An
        ``id`` seen before is a duplicate, unless the two were received more
        than a day apart (an id reused after a counter reset, docs/mqtt.md):
        then it is stored under ``<id>@<received_at>`` and counted ``reused_id``.
        """
        key = str(doc["id"])
        received = parse_utc(doc["received_at"])
        with self.transaction() as db:
            row = db.execute("SELECT received_at FROM readings WHERE id=?", (key,)).fetchone()
            if row is not None:
                if abs(float(row[0]) - received) <= REUSED_ID_AFTER_S:
                    self._count(db, "duplicate")
                    return "duplicate"
                key = f"{key}@{doc['received_at']}"
                if db.execute("SELECT 1 FROM readings WHERE id=?", (key,)).fetchone():
                    self._count(db, "duplicate")
                    return "duplicate"
                self._count(db, "reused_id")
            device = str(doc["device"])
            newest = db.execute("SELECT max(received_at) FROM readings WHERE device=?",
                                (device,)).fetchone()[0]
            index = doc.get("readings", {}).get("index", {}).get("value")
            reading = meter_reading(doc)
            db.execute(
                "INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)",
                (key, device, str(doc["kind"]), int(doc["fcnt"]), received, index,
                 json.dumps([[slot.start, slot.litres] for slot in reading.slots]),
                 json.dumps(doc.get("alarms", [])), json.dumps(doc, ensure_ascii=False)))
            if any("litres" in slot for slot in doc.get("profile", [])) or index is not None:
                self._rebuild(db, device)
            late = newest is not None and float(newest) > received
            self._count(db, "stored")
            if late:
                self._count(db, "late")
            return "late" if late else "stored"

    def _rebuild(self, db: sqlite3.Connection, device: str) -> Series:
        """Rebuild ``device``'s series; write only the hours that changed."""
        series = rebuild(self._meter_readings(db, device))
        stored = {int(h): (float(v), str(q)) for h, v, q in db.execute(
            "SELECT hour, litres, quality FROM hours WHERE device=?", (device,))}
        fresh = {h.start: (h.litres, h.quality) for h in series.hours.values()}
        gone = [(device, h) for h in stored if h not in fresh]
        changed = [(device, h, v, q) for h, (v, q) in fresh.items() if stored.get(h) != (v, q)]
        db.executemany("DELETE FROM hours WHERE device=? AND hour=?", gone)
        db.executemany("INSERT OR REPLACE INTO hours VALUES (?,?,?,?)", changed)
        db.execute("DELETE FROM index_steps WHERE device=?", (device,))
        db.executemany("INSERT INTO index_steps VALUES (?,?,?,?,?)",
                       [(device, s.at, s.before_l, s.after_l, s.reading_id)
                        for s in series.steps])
        return series

    @staticmethod
    def _meter_readings(db: sqlite3.Connection, device: str) -> list[MeterReading]:
        return [MeterReading(str(key), float(received), None if index is None else float(index),
                             tuple(Slot(int(start), float(litres))
                                   for start, litres in json.loads(slots)))
                for key, received, index, slots in db.execute(
                    "SELECT id, received_at, index_l, slots FROM readings WHERE device=? "
                    "ORDER BY received_at", (device,))]

    def readings_of(self, device: str) -> list[MeterReading]:
        """Every stored reading of ``device`` in the series' form, oldest first."""
        return self._meter_readings(self.db, device)

    def previous_received(self, device: str, before: float) -> float | None:
        """When ``device``'s newest reading received before ``before`` arrived, or None."""
        row = self.db.execute("SELECT max(received_at) FROM readings WHERE device=? AND "
                              "received_at<?", (device, before)).fetchone()
        return None if row[0] is None else float(row[0])

    def count_readings(self) -> int:
        """How many readings are stored."""
        return int(self.db.execute("SELECT count(*) FROM readings").fetchone()[0])

    def last_heard(self) -> dict[str, float]:
        """device -> unix time of its newest reading."""
        return {str(d): float(t) for d, t in self.db.execute(
            "SELECT device, max(received_at) FROM readings GROUP BY device")}

    def kinds(self) -> dict[str, str]:
        """device -> kind, for every device with a reading."""
        return {str(d): str(k) for d, k in self.db.execute(
            "SELECT device, max(kind) FROM readings GROUP BY device")}

    # -- series --------------------------------------------------------------

    def hours(self, device: str, start: int | None = None, end: int | None = None) -> list[Hour]:
        """The hourly series of ``device``, optionally within [start, end)."""
        lo = -(2**62) if start is None else start
        hi = 2**62 if end is None else end
        return [Hour(int(h), float(v), str(q)) for h, v, q in self.db.execute(
            "SELECT hour, litres, quality FROM hours WHERE device=? AND hour>=? AND hour<? "
            "ORDER BY hour", (device, lo, hi))]

    def index_steps(self, device: str) -> list[tuple[int, float, float]]:
        """(hour, index before, index after) where ``device``'s index went backwards."""
        return [(int(h), float(b), float(a)) for h, b, a in self.db.execute(
            "SELECT hour, before_l, after_l FROM index_steps WHERE device=? ORDER BY hour",
            (device,))]

    # -- alerts and counters -------------------------------------------------

    def alert(self, key: str) -> dict[str, Any] | None:
        """The stored document of alert ``key``, or None."""
        row = self.db.execute("SELECT document FROM alerts WHERE key=?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_alert(self, key: str, document: Mapping[str, Any]) -> None:
        """Store alert ``key``'s document (its ``state`` is indexed)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO alerts VALUES (?,?,?)",
                       (key, str(document.get("state", "")), json.dumps(document)))

    def alerts(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        """Every alert document, or those in ``state`` (``open``/``closed``)."""
        query = "SELECT document FROM alerts"
        rows = (self.db.execute(query + " WHERE state=? ORDER BY key", (state,))
                if state else self.db.execute(query + " ORDER BY key"))
        for (document,) in rows.fetchall():
            yield dict(json.loads(document))

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to counter ``name``."""
        with self.transaction() as db:
            self._count(db, name, by)

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, by: int = 1) -> None:
        db.execute("INSERT INTO counters VALUES (?,?) "
                   "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value", (name, by))

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        return {str(n): int(v) for n, v in self.db.execute("SELECT name, value FROM counters")}

"""The embedded store: one SQLite file in WAL mode (``[store] path``, the default).

The queries are ``backend.store.SqlStore``'s. Here is what is SQLite's own: the
connection, the transaction start (``BEGIN IMMEDIATE``), the schema and its
migrations (version in ``PRAGMA user_version``; a version 1 or 2 file is
migrated when opened, a newer one or a file with tables and no version is
refused), table sizes from ``dbstat``, and ``household_totals`` written the way
SQLite's planner needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from knute.backend.hours import ESTIMATED, contribution
from knute.backend.store import KNOWN_SQL, SCHEMA_VERSION, Cursor, SqlStore, StoreError

_IN_CHUNK = 5000        # meters per statement on SQLite: below its bound on parameters

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

# Version 2: the incremental series' winners, daily totals and the retention cut-off.
_SCHEMA_V2 = """
CREATE TABLE slots (
    device TEXT NOT NULL,
    hour INTEGER NOT NULL,
    litres REAL NOT NULL,
    received_at REAL NOT NULL,
    reading_id TEXT NOT NULL,
    PRIMARY KEY (device, hour)
) WITHOUT ROWID;
CREATE TABLE anchors (
    device TEXT NOT NULL,
    hour INTEGER NOT NULL,
    index_l REAL NOT NULL,
    received_at REAL NOT NULL,
    reading_id TEXT NOT NULL,
    PRIMARY KEY (device, hour)
) WITHOUT ROWID;
CREATE TABLE days (
    device TEXT NOT NULL,
    day INTEGER NOT NULL,
    litres REAL NOT NULL,
    hours_known INTEGER NOT NULL,
    hours_estimated INTEGER NOT NULL,
    PRIMARY KEY (device, day)
) WITHOUT ROWID;
CREATE INDEX hours_hour ON hours (hour);
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
"""

# Version 3: the per-district rollup of household hours.
_SCHEMA_V3 = """
CREATE TABLE district_hours (
    district TEXT NOT NULL,
    hour INTEGER NOT NULL,
    litres REAL NOT NULL,
    known INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (district, hour)
) WITHOUT ROWID;
CREATE TABLE districts (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL
);
"""


class Store(SqlStore):
    """The embedded store: one SQLite file in WAL mode."""

    kind = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._load_meta()

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, params)

    def _xm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def _begin(self) -> None:
        # IMMEDIATE: the write lock is taken at once, so writers queue on the
        # busy timeout instead of failing when a read turns into a write.
        self.db.execute("BEGIN IMMEDIATE")

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
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            if version < 1:
                _script(self.db, _SCHEMA_V1)
            if version < 2:
                _script(self.db, _SCHEMA_V2)
                if version == 1:
                    self._fill_winners()
            if version < 3:
                _script(self.db, _SCHEMA_V3)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _fill_winners(self) -> None:
        """Version 1 -> 2: the winners of every meter's slots and anchors, from its readings."""
        devices = [str(d) for (d,) in self.db.execute("SELECT DISTINCT device FROM readings")]
        for device in devices:
            for reading in self.readings_of(device):
                c = contribution(reading)
                self._winners(device, c.slots, c.anchors, c.received_at, c.reading_id)

    def household_totals(self, devices: Sequence[str], start: int,
                         end: int) -> dict[int, tuple[float, int, int]]:
        """hour -> (Σ litres, hours known, hours estimated) of ``devices`` in [start, end).

        SQLite's planner would take the index on ``hour`` and fetch every row of
        the city in the range; CROSS JOIN keeps the meters outside, so each is
        one seek on the primary key (device, hour). Meters go in chunks below
        SQLite's bound on parameters (a city's households in one district).
        """
        out: dict[int, tuple[float, int, int]] = {}
        for i in range(0, len(devices), _IN_CHUNK):
            chunk = devices[i:i + _IN_CHUNK]
            values = ",".join("(?)" for _ in chunk)
            for h, v, k, e in self.db.execute(
                    f"WITH d(device) AS (VALUES {values}) SELECT h.hour, sum(h.litres), "
                    f"sum(CASE WHEN h.{KNOWN_SQL} THEN 1 ELSE 0 END), "
                    f"sum(CASE WHEN h.quality='{ESTIMATED}' THEN 1 ELSE 0 END) "
                    "FROM d CROSS JOIN hours AS h WHERE h.device=d.device AND h.hour>=? "
                    "AND h.hour<? GROUP BY h.hour", (*chunk, start, end)):
                was = out.get(int(h), (0.0, 0, 0))
                out[int(h)] = (was[0] + float(v), was[1] + int(k), was[2] + int(e))
        return out

    def size_bytes(self, table: str) -> int:
        """Bytes of ``table`` and its indexes (SQLite's dbstat, else pages by estimate)."""
        try:
            row = self.db.execute("SELECT sum(pgsize) FROM dbstat WHERE name=? OR name IN "
                                  "(SELECT name FROM sqlite_master WHERE tbl_name=? AND "
                                  "type='index')", (table, table)).fetchone()
            return int(row[0] or 0)
        except sqlite3.OperationalError:      # SQLite built without dbstat
            pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
            size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
            return pages * size

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def _script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)

"""The database-server store: PostgreSQL through psycopg 3 (``[store] url``).

The same queries as the embedded store (``backend.store.SqlStore``); only the
connection, the schema's column types and the locking differ:

- Schema version in the table ``schema_version``; a database that has other
  tables and no version is refused by name, as a newer version is.
- A write transaction takes a transaction-scoped advisory lock per meter, so
  consumers on several machines sharing one database update a meter's series
  one after the other (SQLite gets the same from its single writer).
- Round trips: inside a transaction, writes whose result is not read
  (``_w``, ``_wm``: the reading's row, its hours, counters, alert states) and
  the transaction's ``BEGIN`` and lock are held back and sent in one pipeline
  with the next query or with the ``COMMIT`` (psycopg's pipeline mode), so a
  reading costs a handful of round trips, not one per statement
  (``batch=False`` sends each at once, for ``knute bench backend``'s
  comparison).
- A lost connection (server restart, network) fails the statement running
  (``errors``: the consumer leaves that reading unacknowledged) and the next
  statement outside a transaction connects again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from knute.backend.store import SCHEMA_VERSION, Cursor, SqlStore, StoreError

# Version 3: the per-district rollup of household hours (backend.store_sqlite).
_V3 = ("""
CREATE TABLE district_hours (
    district TEXT NOT NULL,
    hour BIGINT NOT NULL,
    litres DOUBLE PRECISION NOT NULL,
    known INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (district, hour)
);
CREATE TABLE districts (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL
);
""",)

_SCHEMA = """
CREATE TABLE readings (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    fcnt BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    index_l DOUBLE PRECISION,
    slots TEXT NOT NULL,
    alarms TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX readings_device ON readings (device, received_at);
CREATE TABLE hours (
    device TEXT NOT NULL,
    hour BIGINT NOT NULL,
    litres DOUBLE PRECISION NOT NULL,
    quality TEXT NOT NULL CHECK (quality IN ('measured', 'index', 'estimated')),
    PRIMARY KEY (device, hour)
);
CREATE INDEX hours_hour ON hours (hour);
CREATE TABLE index_steps (
    device TEXT NOT NULL,
    hour BIGINT NOT NULL,
    before_l DOUBLE PRECISION NOT NULL,
    after_l DOUBLE PRECISION NOT NULL,
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
    value BIGINT NOT NULL
);
CREATE TABLE slots (
    device TEXT NOT NULL,
    hour BIGINT NOT NULL,
    litres DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    reading_id TEXT NOT NULL,
    PRIMARY KEY (device, hour)
);
CREATE TABLE anchors (
    device TEXT NOT NULL,
    hour BIGINT NOT NULL,
    index_l DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    reading_id TEXT NOT NULL,
    PRIMARY KEY (device, hour)
);
CREATE TABLE days (
    device TEXT NOT NULL,
    day BIGINT NOT NULL,
    litres DOUBLE PRECISION NOT NULL,
    hours_known INTEGER NOT NULL,
    hours_estimated INTEGER NOT NULL,
    PRIMARY KEY (device, day)
);
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value DOUBLE PRECISION NOT NULL
);
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
""" + "".join(_V3)


class PgStore(SqlStore):
    """A PostgreSQL database holding the backend's tables."""

    kind = "postgres"
    errors = (psycopg.OperationalError, psycopg.errors.DiskFull,
              psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)

    def __init__(self, url: str, batch: bool = True) -> None:
        super().__init__()
        self.url = url
        self.batch = batch
        # Statements held back: (sql, parameters) or (sql, rows of executemany).
        self._pending: list[tuple[str, Sequence[Any], bool]] = []
        self.path = _safe(url)
        try:
            self.db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"{self.path}: cannot connect: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        self.reconnects = 0
        self._sql: dict[str, str] = {}
        self._migrate()
        self._load_meta()

    def _q(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return translated

    def _ensure(self) -> None:
        """Connect again if the connection was lost (only between transactions)."""
        if self._depth == 0 and (self.db.closed or self.db.broken):
            self.db = psycopg.connect(self.url, autocommit=True)
            self.reconnects += 1

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._ensure()
        if not self._pending:
            return self.db.execute(self._q(sql), params)
        cursor: Cursor = self._flush((self._q(sql), params))
        return cursor

    def _xm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._flush()
            with self.db.cursor() as cursor:
                cursor.executemany(self._q(sql), rows)

    def _w(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self.batch and self._depth:
            self._pending.append((self._q(sql), params, False))
        else:
            self._x(sql, params)

    def _wm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.batch and self._depth:
            self._pending.append((self._q(sql), rows, True))
        else:
            self._xm(sql, rows)

    def _flush(self, last: tuple[str, Sequence[Any]] | None = None) -> Any:
        """Send the held-back statements and ``last`` in one pipeline; ``last``'s cursor."""
        pending, self._pending = self._pending, []
        cursor = None
        many_cursors = []
        try:
            with self.db.pipeline():
                for sql, params, many in pending:
                    if many:
                        many_cursors.append(self.db.cursor())
                        many_cursors[-1].executemany(sql, params)
                    else:
                        self.db.execute(sql, params)
                if last is not None:
                    cursor = self.db.execute(*last)
        finally:
            for each in many_cursors:
                each.close()
        return cursor

    def _begin(self) -> None:
        self._ensure()
        if self.batch:
            self._pending.append(("BEGIN", (), False))
        else:
            self.db.execute("BEGIN")

    def _begin_read(self) -> None:
        self._ensure()
        self.db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _end(self, commit: bool) -> None:
        # Never on a new connection: a transaction lost with its connection
        # must fail, not commit nothing.
        if commit:
            if self._pending:
                self._flush(("COMMIT", ()))
            else:
                self.db.execute("COMMIT")
            return
        unsent = bool(self._pending) and self._pending[0][0] == "BEGIN"
        self._pending.clear()
        if unsent:
            return         # not even its BEGIN was sent: there is nothing to roll back
        if not (self.db.closed or self.db.broken):
            self.db.execute("ROLLBACK")

    def _lock(self, name: str) -> None:
        if self._depth:
            self._w("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))

    def _exclusive(self, table: str) -> None:
        self._x(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _migrate(self) -> None:
        tables = {str(t) for (t,) in self.db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        if "schema_version" in tables:
            row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: store schema version {version} is newer than "
                                 f"this knute ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                self._upgrade()
            return
        if tables:
            raise StoreError(f"{self.path}: not a knute backend store (has tables, "
                             "no version)")
        with self.transaction():
            self._x("SELECT pg_advisory_xact_lock(hashtextextended('schema', 0))")
            exists = self._x("SELECT to_regclass('schema_version')").fetchone()
            if exists is None or exists[0] is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._x(statement)
                self._x("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _upgrade(self) -> None:
        """Version 2 -> 3: the district rollup's tables (filled by ``set_districts``)."""
        with self.transaction():
            self._x("SELECT pg_advisory_xact_lock(hashtextextended('schema', 0))")
            version = int(self._x("SELECT max(version) FROM schema_version").fetchone()[0])
            if version < 3:
                for statement in _V3[0].split(";"):
                    if statement.strip():
                        self._x(statement)
            self._x("UPDATE schema_version SET version=?", (SCHEMA_VERSION,))

    def size_bytes(self, table: str) -> int:
        """Bytes of ``table`` with its indexes and TOAST (``pg_total_relation_size``)."""
        row = self.db.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url

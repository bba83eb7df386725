"""The database-server store: PostgreSQL through psycopg 3 (``[store] url``).

The same queries as the embedded store (``backend.store.SqlStore``); only the
connection, the schema's column types and the locking differ:

- Schema version in the table ``schema_version``; a database that has other
  tables and no version is refused by name, as a newer version is.
- A write transaction takes a transaction-scoped advisory lock per meter, so
  consumers on several machines sharing one database update a meter's series
  one after the other (SQLite gets the same from its single writer).
- A lost connection (server restart, network) fails the statement running
  (``errors``: the consumer leaves that reading unacknowledged) and the next
  statement outside a transaction connects again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from knute.backend.store import SCHEMA_VERSION, SqlStore, StoreError, _Cursor

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
"""


class PgStore(SqlStore):
    """A PostgreSQL database holding the backend's tables."""

    kind = "postgres"
    errors = (psycopg.OperationalError, psycopg.errors.DiskFull,
              psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
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

    def _x(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        self._ensure()
        return self.db.execute(self._q(sql), params)

    def _xm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.db.cursor() as cursor:
                cursor.executemany(self._q(sql), rows)

    def _begin(self) -> None:
        self._ensure()
        self.db.execute("BEGIN")

    def _begin_read(self) -> None:
        self._ensure()
        self.db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _end(self, commit: bool) -> None:
        # Never on a new connection: a transaction lost with its connection
        # must fail, not commit nothing.
        if commit:
            self.db.execute("COMMIT")
        elif not (self.db.closed or self.db.broken):
            self.db.execute("ROLLBACK")

    def _lock(self, name: str) -> None:
        if self._depth:
            self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

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
            return
        if tables:
            raise StoreError(f"{self.path}: not a knute backend store (has tables, "
                             "no version)")
        with self.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended('schema', 0))")
            exists = self.db.execute("SELECT to_regclass('schema_version')").fetchone()
            if exists is None or exists[0] is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))

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

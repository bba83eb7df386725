"""The device registry: which devices this gateway serves, their keys and metadata.

One SQLite file (WAL mode, created with mode 0600 because it holds AES keys)
with one row per device: id, kind, key, name, site and location metadata, and a
display cache (last frame counter, last seen, battery, active alarms) that the
daemon refreshes now and then. The replay state that matters for safety is NOT
here: it lives in the spool database, committed with the spooled rows.

The schema is versioned with ``PRAGMA user_version``; ``_MIGRATIONS[n]`` takes a
file from version n to n + 1 and every step is tested on an old file.

Keys never appear in ``repr()``, logs or CLI output unless asked for explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knute.gateway.dbfile import (
    REGISTRY_APP_ID,
    NotKnuteFile,
    bound_queries,
    check_identity,
    is_corruption,
    move_aside,
    quick_check,
)
from knute.gateway.device_fields import device_row, format_device_id, parse_interval
from knute.gateway.errors import KnuteError
from knute.gateway.model import Device as Device  # re-exported: the registry holds these

log = logging.getLogger("knute.registry")

SCHEMA_VERSION = 4


class DeviceExists(KnuteError):
    """A device with this id is already registered."""


class UnknownDevice(KnuteError):
    """No device with this id is registered."""


@dataclass(frozen=True)
class Seen:
    """Display cache update for one device after an accepted frame."""

    device_id: int
    fcnt: int
    seen_at: float
    battery: int | None
    alarms: tuple[str, ...]


# Schema. Version 1 was id, kind, key, name only; version 2 added site metadata and
# the display cache.
_SCHEMA_V1 = """
CREATE TABLE devices (
    device_id INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL,
    key       BLOB NOT NULL,
    name      TEXT NOT NULL DEFAULT ''
)
"""


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE devices ADD COLUMN site TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE devices ADD COLUMN location TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE devices ADD COLUMN added_at REAL")
    db.execute("ALTER TABLE devices ADD COLUMN last_fcnt INTEGER")
    db.execute("ALTER TABLE devices ADD COLUMN last_seen REAL")
    db.execute("ALTER TABLE devices ADD COLUMN battery INTEGER")
    db.execute("ALTER TABLE devices ADD COLUMN alarms TEXT NOT NULL DEFAULT '[]'")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    # Registry sharing (gateway.registry_share): the share version a row came from;
    # NULL for a device registered here, which the share never overwrites.
    db.execute("ALTER TABLE devices ADD COLUMN shared_version INTEGER")


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    # The device's own send interval (gateway.silence); NULL: its kind's.
    db.execute("ALTER TABLE devices ADD COLUMN interval_s REAL")


_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4}


def create_v1(path: str) -> None:
    """Create an empty version-1 registry file (for migration tests)."""
    db = sqlite3.connect(path)
    with db:
        db.execute(_SCHEMA_V1)
        db.execute("PRAGMA user_version = 1")
    db.close()


def _enable_wal(db: sqlite3.Connection, patience_s: float = 10.0) -> None:
    """Switch to WAL mode, waiting for other first openers.

    Changing the journal mode needs an exclusive lock, and SQLite reports a
    conflicting opener as "database is locked" at once instead of calling the
    busy handler, so two processes opening a new registry together (the
    gateway starting while ``knute provision`` registers a node) retry here.
    """
    deadline = time.monotonic() + patience_s
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _create_private(path: str) -> None:
    # Create the file with mode 0600 before SQLite opens it; SQLite gives its
    # -wal and -shm files the same mode as the database file.
    if path == ":memory:" or os.path.exists(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o750, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return      # another process created it first: it made it 0600 too
    except OSError as exc:
        raise KnuteError(f"registry {path}: cannot create: {exc.strerror}") from None
    os.close(fd)


class Registry:
    """The registry database. Thread-safe; every write is one transaction."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data_version: int | None = None
        self._file_id: tuple[int, int] | None = None
        if path != ":memory:":
            check_identity(path, "registry", REGISTRY_APP_ID, SCHEMA_VERSION)
        _create_private(path)
        try:
            self._db = self._connect(path, check=True)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise KnuteError(f"registry {path}: {exc}") from None
            # A damaged file (torn write, bad sector, truncated copy): keep it for the
            # operator, start a fresh registry and copy every device still readable.
            moved = move_aside(path)
            log.error("registry %s is corrupt (%s): moved aside to %s, starting a fresh "
                      "registry", path, exc, moved)
            _create_private(path)
            try:
                self._db = self._connect(path, check=False)
            except sqlite3.DatabaseError as again:
                raise KnuteError(f"registry {path}: {again}") from None
            self._migrate()
            saved, lost = self._salvage(moved)
            log.error("registry %s: salvaged %d devices from %s (%d unreadable rows); "
                      "re-add missing devices with 'knute devices add' or 'import'",
                      path, saved, moved, lost)
            self._file_id = _file_id(path)
            self._data_version = self._version_now()
            return
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise
        self._file_id = _file_id(path)
        self._data_version = self._version_now()

    def changed(self) -> bool:
        """True once another connection (``knute devices``, ``sqlite3 .restore``)
        committed a change since the last call (or the open).

        ``PRAGMA data_version`` moves only for commits made by other
        connections, so the daemon's own display-cache writes do not count.
        """
        version = self._version_now()
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    def _version_now(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def replaced(self) -> bool:
        """True if the file at ``path`` is no longer the one this registry has open."""
        # A missing file is not a replacement: reopening would start an empty registry.
        now = _file_id(self.path)
        return self._file_id is not None and now is not None and now != self._file_id

    @staticmethod
    def _connect(path: str, *, check: bool) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        try:
            _enable_wal(db)
            db.execute("PRAGMA synchronous=FULL")
            if check and path != ":memory:":
                quick_check(db)
        except BaseException:
            db.close()
            raise
        return db

    def _salvage(self, moved: str) -> tuple[int, int]:
        """Copy every readable, valid device row of a corrupt file; (saved, unreadable)."""
        rows: list[Sequence[Any]] = []
        bad = 0
        try:
            old = sqlite3.connect(f"file:{moved}?mode=ro", uri=True)
        except sqlite3.Error:
            return 0, 0
        bound_queries(old)
        try:
            for cols in ("device_id, kind, key, name, site, location, interval_s",
                         "device_id, kind, key, name, site, location, NULL",
                         "device_id, kind, key, name, '', '{}', NULL"):
                # The first column list the file has; rows up to a damaged page count.
                got: list[Sequence[Any]] = []
                try:
                    for row in old.execute(f"SELECT {cols} FROM devices"):
                        got.append(row)
                except sqlite3.Error:
                    if not got:
                        continue
                rows = got
                break
        finally:
            old.close()
        values: dict[int, tuple[Any, ...]] = {}
        for row in rows:
            try:
                location = json.loads(row[5] or "{}")
                if not isinstance(location, dict):
                    location = {}
                try:        # a damaged interval only costs the device its own interval
                    interval = parse_interval(row[6])
                except KnuteError:
                    interval = None
                vals = device_row(int(row[0]), str(row[1]), bytes(row[2]), str(row[3]),
                                    str(row[4]), location, interval)
            except (KnuteError, ValueError, TypeError):
                bad += 1
                continue
            values[vals[0]] = vals
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO devices (device_id, kind, key, name, site, location, "
                "added_at, interval_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(values.values()))
        return len(values), bad

    # -- schema ------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The schema version of the open file."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            try:
                version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                app_id = int(self._db.execute("PRAGMA application_id").fetchone()[0])
            except sqlite3.DatabaseError as exc:
                raise KnuteError(f"registry {self.path}: {exc}") from None
            self._check_version(version)
            if version == SCHEMA_VERSION and app_id == REGISTRY_APP_ID:
                return
            # Creating or migrating: one process at a time. The gateway and `knute
            # devices` (or `knute provision`) may open a new registry at the same moment;
            # the second waits here and then finds the work done.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                self._check_version(version)
                if version == 0:
                    tables = self._db.execute(
                        "SELECT count(*) FROM sqlite_master").fetchone()[0]
                    if tables:
                        raise NotKnuteFile(f"registry {self.path} is an SQLite database but "
                                           "not a knute registry; left unchanged")
                    self._db.execute(_SCHEMA_V1)
                    self._db.execute("PRAGMA user_version = 1")
                    version = 1
                while version < SCHEMA_VERSION:
                    _MIGRATIONS[version](self._db)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
                    version += 1
                self._db.execute(f"PRAGMA application_id = {REGISTRY_APP_ID}")
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise KnuteError(f"registry {self.path} has schema {version}, newer than this "
                             f"knute ({SCHEMA_VERSION})")

    # -- reads -------------------------------------------------------------------

    _COLS = ("device_id, kind, key, name, site, location, last_fcnt, last_seen, battery, "
             "alarms, interval_s")

    @staticmethod
    def _row(row: Sequence[Any]) -> Device:
        return Device(
            device_id=int(row[0]), kind=str(row[1]), key=bytes(row[2]), name=str(row[3]),
            site=str(row[4]), location=json.loads(row[5] or "{}"),
            last_fcnt=row[6], last_seen=row[7], battery=row[8],
            alarms=tuple(json.loads(row[9] or "[]")),
            interval_s=None if row[10] is None else float(row[10]))

    def get(self, device_id: int) -> Device | None:
        """The device with this id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLS} FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
        return None if row is None else self._row(row)

    def all(self) -> list[Device]:
        """Every device, by id."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLS} FROM devices ORDER BY device_id").fetchall()
        return [self._row(r) for r in rows]

    def snapshot(self) -> dict[int, Device]:
        """device_id -> Device for the pipeline (one consistent read)."""
        return {d.device_id: d for d in self.all()}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM devices").fetchone()[0])

    # -- writes ------------------------------------------------------------------

    def add(self, device_id: int | str, kind: str, key: bytes | str, name: str = "",
            site: str = "", location: Mapping[str, Any] | None = None,
            interval_s: float | None = None) -> Device:
        """Register one device; DeviceExists if the id is taken.

        ``interval_s``: its send interval (the silent-node alarm); None for its kind's.
        """
        values = device_row(device_id, kind, key, name, site, location, interval_s)
        with self._lock:
            try:
                with self._db:
                    self._db.execute(
                        "INSERT INTO devices (device_id, kind, key, name, site, location, "
                        "added_at, interval_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
            except sqlite3.IntegrityError:
                raise DeviceExists(
                    f"device {format_device_id(values[0])} is already registered") from None
        dev = self.get(values[0])
        assert dev is not None
        return dev

    def remove(self, device_id: int) -> None:
        """Remove one device; UnknownDevice if there is none."""
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
        if cur.rowcount == 0:
            raise UnknownDevice(f"device {format_device_id(device_id)} is not registered")

    def import_csv(self, text: str, *, source: str = "<csv>", update: bool = False) -> int:
        """Register the devices of a CSV file; returns how many were added or updated.

        See ``import_report``; this is its ``added + updated``.
        """
        report = self.import_report(text, source=source, update=update)
        return report["added"] + report["updated"]

    def import_report(self, text: str, *, source: str = "<csv>",
                      update: bool = False) -> dict[str, int]:
        """Import a CSV file in one transaction (all or nothing): added, updated, unchanged.

        The file's form and checks: ``gateway.device_csv``. Importing is
        idempotent: a row equal to the registered device changes nothing. A row
        that differs (kind, key, name, site, location, or an ``interval_s`` it
        gives: an empty or missing one leaves the registered interval) is an update the
        operator confirms: without ``update`` the whole file is rejected with
        one line naming the first such line and what differs; with it the rows
        are updated.
        """
        from knute.gateway.device_csv import read_csv  # the csv module: imports only

        rows = read_csv(text, source)
        fields = ("kind", "key", "name", "site", "location", "interval_s")
        added = updated = same = 0
        changed: list[tuple[int, int, list[str]]] = []
        with self._lock:
            try:
                with self._db:
                    for line, values in rows:
                        old = self._db.execute(
                            "SELECT kind, key, name, site, location, interval_s FROM devices "
                            "WHERE device_id = ?", (values[0],)).fetchone()
                        if old is None:
                            self._db.execute(
                                "INSERT INTO devices (device_id, kind, key, name, site, "
                                "location, added_at, interval_s) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?)", values)
                            added += 1
                            continue
                        interval = old[5] if values[7] is None else values[7]
                        was = (old[0], bytes(old[1]), old[2], old[3], json.loads(old[4] or "{}"),
                               old[5])
                        now = (values[1], values[2], values[3], values[4], json.loads(values[5]),
                               interval)
                        diff = [f for f, a, b in zip(fields, was, now, strict=True) if a != b]
                        if not diff:
                            same += 1
                            continue
                        changed.append((line, values[0], diff))
                        if update:
                            self._db.execute(
                                "UPDATE devices SET kind = ?, key = ?, name = ?, site = ?, "
                                "location = ?, interval_s = ? WHERE device_id = ?",
                                (*values[1:6], interval, values[0]))
                            updated += 1
                    if changed and not update:
                        line, device_id, diff = changed[0]
                        more = f" ({len(changed)} rows differ)" if len(changed) > 1 else ""
                        raise DeviceExists(
                            f"{source} line {line}: device {format_device_id(device_id)} is "
                            f"already registered with another {', '.join(diff)}{more}; "
                            "nothing imported; import again with --update to change them")
            except sqlite3.DatabaseError as exc:
                raise KnuteError(f"{source}: {exc}; nothing imported") from None
        return {"added": added, "updated": updated, "unchanged": same}

    def shared_state(self, device_id: int) -> tuple[tuple[str, bytes, str, str,
                                                          dict[str, Any], float | None] | None,
                                                    int | None]:
        """((kind, key, name, site, location, interval_s) or None, share version or None)
        of one device."""
        with self._lock:
            row = self._db.execute(
                "SELECT kind, key, name, site, location, shared_version, interval_s "
                "FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            return None, None
        local = (str(row[0]), bytes(row[1]), str(row[2]), str(row[3]),
                 json.loads(row[4] or "{}"), None if row[6] is None else float(row[6]))
        return local, None if row[5] is None else int(row[5])

    def rotated_away(self, device_id: int, fingerprint: str) -> bool:
        """Whether a key rotation at this gateway replaced the device's key with this
        fingerprint (gateway.downlink_rekey keeps them; a registry without that table: no)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT 1 FROM dl_rekey_retired WHERE device_id = ? "
                                       "AND fingerprint = ?", (device_id, fingerprint)
                                       ).fetchone()
            except sqlite3.OperationalError:
                return False
        return row is not None

    def apply_shared(self, device_id: int, version: int, values: Sequence[Any] | None) -> None:
        """Write what the share decided: ``values`` = (kind, key, name, site, location,
        interval_s) to add or replace the device at ``version``, None to remove it."""
        with self._lock, self._db:
            if values is None:
                self._db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
                return
            row = device_row(device_id, *values)
            self._db.execute(
                "INSERT INTO devices (device_id, kind, key, name, site, location, added_at, "
                "interval_s, shared_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(device_id) DO "
                "UPDATE SET kind = excluded.kind, key = excluded.key, name = excluded.name, "
                "site = excluded.site, location = excluded.location, "
                "interval_s = excluded.interval_s, "
                "shared_version = excluded.shared_version", (*row, version))

    def record_seen(self, updates: Iterable[Seen]) -> None:
        """Refresh the display cache (last counter, last seen, battery, alarms)."""
        params = [(u.fcnt, u.seen_at, u.battery, json.dumps(list(u.alarms)), u.device_id)
                  for u in updates]
        if not params:
            return
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE devices SET last_fcnt = ?, last_seen = ?, battery = ?, alarms = ? "
                "WHERE device_id = ?", params)

    def clear_counter(self, device_id: int) -> None:
        """Forget the cached last counter (display only) after a counter reset."""
        with self._lock, self._db:
            self._db.execute("UPDATE devices SET last_fcnt = NULL WHERE device_id = ?",
                             (device_id,))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when it is missing or in memory."""
    if path == ":memory:":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino



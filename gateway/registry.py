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

import codecs
import csv
import io
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
from knute.gateway.errors import KnuteError
from knute.gateway.model import Device as Device  # re-exported: the registry holds these
from knute.gateway.model import finite_only as finite_only
from knute.protocol import frame, kinds

log = logging.getLogger("knute.registry")

SCHEMA_VERSION = 2
CSV_COLUMNS = ("device_id", "kind", "key", "name", "site")
_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


class DeviceExists(KnuteError):
    """A device with this id is already registered."""


class UnknownDevice(KnuteError):
    """No device with this id is registered."""


def parse_device_id(text: str | int) -> int:
    """A device id from decimal, ``0x``-hex or exactly 8 hex digits (the printed form)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        raw = str(text).strip()
        try:
            if raw.lower().startswith("0x"):
                value = int(raw[2:], 16)
            elif _HEX8.match(raw):
                value = int(raw, 16)
            else:
                value = int(raw, 10)
        except ValueError:
            raise KnuteError(
                f"device id {raw!r} is not decimal, 0x-hex or 8 hex digits") from None
    if value < 0 or value > frame.MAX_DEVICE_ID:
        raise KnuteError(f"device id {value} is outside 0..{frame.MAX_DEVICE_ID}")
    return value


def format_device_id(device_id: int) -> str:
    """The printed form of a device id: 8 lower-case hex digits."""
    return f"{device_id:08x}"


def parse_key(key: str | bytes) -> bytes:
    """A 16-byte AES key from bytes or 32 hex digits."""
    if isinstance(key, bytes | bytearray):
        raw = bytes(key)
    else:
        text = key.strip()
        if not _HEX32.match(text):
            raise KnuteError("key must be 32 hex digits (16 bytes)")
        raw = bytes.fromhex(text)
    if len(raw) != 16:
        raise KnuteError("key must be 16 bytes")
    return raw


def check_kind(kind: str) -> str:
    """``kind`` if it names a sensor kind in protocol.kinds, else a KnuteError."""
    if kind not in kinds.KIND_IDS:
        names: list[str] = [str(k) for k in kinds.KIND_IDS]
        known = ", ".join(sorted(names))
        raise KnuteError(f"unknown kind {kind!r} (known: {known})")
    return kind


@dataclass(frozen=True)
class Seen:
    """Display cache update for one device after an accepted frame."""

    device_id: int
    fcnt: int
    seen_at: float
    battery: int | None
    alarms: tuple[str, ...]


def csv_line(device_id: int, kind: str, key: bytes | str, name: str = "", site: str = "",
             location: Mapping[str, Any] | None = None) -> str:
    """One CSV line (no header) for ``knute devices import``; columns as CSV_COLUMNS.

    Location metadata (address, lat, lon, ...) goes in a final ``location`` column
    as a JSON object. The provisioning tool writes these lines when it works
    offline; ``csv_header()`` gives the matching header.
    """
    check_kind(kind)
    raw_key = parse_key(key)
    buf = io.StringIO()
    row = [format_device_id(device_id), kind, raw_key.hex(), name, site]
    if location:
        row.append(json.dumps(dict(location), sort_keys=True, separators=(",", ":")))
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


def csv_header(with_location: bool = True) -> str:
    """The header line of an import file."""
    cols = [*CSV_COLUMNS, "location"] if with_location else list(CSV_COLUMNS)
    return ",".join(cols) + "\n"


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


_MIGRATIONS = {1: _migrate_1_to_2}


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
            for cols in ("device_id, kind, key, name, site, location",
                         "device_id, kind, key, name, '', '{}'"):
                try:
                    for row in old.execute(f"SELECT {cols} FROM devices"):
                        rows.append(row)
                    break
                except sqlite3.Error:
                    continue
        finally:
            old.close()
        values: dict[int, tuple[Any, ...]] = {}
        for row in rows:
            try:
                location = json.loads(row[5] or "{}")
                if not isinstance(location, dict):
                    location = {}
                vals = self._values(int(row[0]), str(row[1]), bytes(row[2]), str(row[3]),
                                    str(row[4]), location)
            except (KnuteError, ValueError, TypeError):
                bad += 1
                continue
            values[vals[0]] = vals
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO devices (device_id, kind, key, name, site, location, "
                "added_at) VALUES (?, ?, ?, ?, ?, ?, ?)", list(values.values()))
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
             "alarms")

    @staticmethod
    def _row(row: Sequence[Any]) -> Device:
        return Device(
            device_id=int(row[0]), kind=str(row[1]), key=bytes(row[2]), name=str(row[3]),
            site=str(row[4]), location=json.loads(row[5] or "{}"),
            last_fcnt=row[6], last_seen=row[7], battery=row[8],
            alarms=tuple(json.loads(row[9] or "[]")))

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

    @staticmethod
    def _values(device_id: int | str, kind: str, key: bytes | str, name: str, site: str,
                location: Mapping[str, Any] | None) -> tuple[Any, ...]:
        dev = parse_device_id(device_id)
        check_kind(kind)
        raw_key = parse_key(key)
        check_location(location or {})
        loc = json.dumps(dict(location or {}), sort_keys=True, allow_nan=False)
        return (dev, kind, raw_key, name, site, loc, time.time())

    def add(self, device_id: int | str, kind: str, key: bytes | str, name: str = "",
            site: str = "", location: Mapping[str, Any] | None = None) -> Device:
        """Register one device; DeviceExists if the id is taken."""
        values = self._values(device_id, kind, key, name, site, location)
        with self._lock:
            try:
                with self._db:
                    self._db.execute(
                        "INSERT INTO devices (device_id, kind, key, name, site, location, "
                        "added_at) VALUES (?, ?, ?, ?, ?, ?, ?)", values)
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

    def import_csv(self, text: str, *, source: str = "<csv>") -> int:
        """Register every device of a CSV file in one transaction (all or nothing).

        The header names the columns; ``device_id``, ``kind`` and ``key`` are
        required, ``name``, ``site`` and ``location`` (a JSON object) optional,
        and any other column becomes a location entry (e.g. ``address``,
        ``lat``, ``lon``). Any bad line, an id already registered or repeated in
        the file, a quote left open, a field over the size limit or a
        non-finite number rejects the whole file with one line naming the line.
        ``decode_csv`` turns the file's bytes into ``text`` (BOM, UTF-16).
        """
        text = text.removeprefix("\ufeff")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        records = _records(reader, source)
        try:
            line, header = next(records)
        except StopIteration:
            raise KnuteError(f"{source}: empty file") from None
        cols = [c.strip() for c in header]
        missing = [c for c in ("device_id", "kind", "key") if c not in cols]
        if missing:
            raise KnuteError(f"{source} line {line}: header lacks column(s) "
                             f"{', '.join(missing)} (found: {', '.join(cols) or 'none'})")
        rows: list[tuple[Any, ...]] = []
        lines: dict[int, int] = {}
        for line, fields in records:
            if len(fields) > len(cols):
                raise KnuteError(f"{source} line {line}: {len(fields)} fields, the header has "
                                 f"{len(cols)} columns (an unquoted comma?)")
            raw = dict(zip(cols, fields, strict=False))
            rec = {k: v.strip() for k, v in raw.items()}
            try:
                location: dict[str, Any] = {}
                if rec.get("location"):
                    loaded = json.loads(rec["location"], parse_constant=_no_constant)
                    if not isinstance(loaded, dict):
                        raise KnuteError("location must be a JSON object")
                    location.update(loaded)
                for col, val in rec.items():
                    if col in (*CSV_COLUMNS, "location") or not val:
                        continue
                    location[col] = _location_value(col, val)
                values = self._values(rec.get("device_id", ""), rec.get("kind", ""),
                                      rec.get("key", ""), rec.get("name", ""),
                                      rec.get("site", ""), location)
            except (KnuteError, ValueError) as exc:
                raise KnuteError(f"{source} line {line}: {exc}") from None
            if values[0] in lines:
                raise KnuteError(
                    f"{source} line {line}: device {format_device_id(values[0])} "
                    f"appears twice (first on line {lines[values[0]]})")
            lines[values[0]] = line
            rows.append(values)
        with self._lock:
            try:
                with self._db:
                    for values in rows:
                        try:
                            self._db.execute(
                                "INSERT INTO devices (device_id, kind, key, name, site, "
                                "location, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)", values)
                        except sqlite3.IntegrityError:
                            raise DeviceExists(
                                f"{source} line {lines[values[0]]}: device "
                                f"{format_device_id(values[0])} is already registered; "
                                "nothing imported") from None
            except sqlite3.DatabaseError as exc:
                raise KnuteError(f"{source}: {exc}; nothing imported") from None
        return len(rows)

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


def decode_csv(data: bytes, source: str = "<csv>") -> str:
    """The text of an import file: UTF-8 (with or without a BOM) or UTF-16 with a BOM.

    Anything else (Latin-1, Windows-1252, UTF-16 without a BOM) is one
    KnuteError naming the line and column of the first byte that is not UTF-8.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise KnuteError(f"{source}: not valid UTF-16 at byte {exc.start}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise KnuteError(
            f"{source} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column "
            f"{column}; Latin-1 or Windows-1252?): save the file as UTF-8") from None


def _records(reader: Any, source: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every non-blank record; a record spanning lines is an error.

    A quote left open makes the csv module swallow the following lines (keys
    included) into one field: no knute column holds a line break, so a record
    that runs over several lines is refused, naming where it starts.
    """
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise KnuteError(f"{source} line {start}: {_csv_problem(exc)}") from None
        end = reader.line_num
        if end != start:
            raise KnuteError(f"{source} line {start}: a quoted field runs on to line {end} "
                             "(a quote left open?)")
        if fields and any(f.strip() for f in fields):
            yield start, fields


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit() // 1024} KiB"
    if "unexpected end of data" in text:
        return "a quote is left open up to the end of the file"
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"location: {name} is not a finite number")


# Location entries that must be numbers, and their ranges.
_NUMERIC_LOCATION = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0)}


def _location_value(col: str, val: str) -> Any:
    """A location entry from a CSV cell: an int, a finite float, or the text."""
    try:
        return int(val)
    except ValueError:
        pass
    try:
        number = float(val)
    except ValueError:
        if col in _NUMERIC_LOCATION:
            raise KnuteError(f"{col}: {val!r} is not a number") from None
        return val
    if math.isfinite(number):
        return number
    if col in _NUMERIC_LOCATION:
        raise KnuteError(f"{col}: {val!r} is not a finite number")
    return val          # "inf" or "nan" as a word in an address stays text


def check_location(location: Mapping[str, Any]) -> None:
    """KnuteError unless every number in ``location`` is finite (and lat/lon in range)."""
    for key, value in location.items():
        _check_finite(value, f"location {key}")
        if key in _NUMERIC_LOCATION:
            lo, hi = _NUMERIC_LOCATION[key]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise KnuteError(f"{key}: must be a number, got {value!r}")
            if not lo <= value <= hi:
                raise KnuteError(f"{key}: must be {lo:g}..{hi:g}, got {value:g}")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise KnuteError(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, where)


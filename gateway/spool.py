"""The spool: a durable store-and-forward queue of accepted frames (SQLite, WAL).

What "accepted" means
---------------------
A frame is accepted when the transaction of :meth:`Spool.accept` that inserts
its row has committed. The same transaction advances the device's replay
counter (last accepted frame counter), so a row and its counter are never
seen apart: a crash before the commit leaves neither (the frame was never
accepted), a crash after leaves both (it will be delivered). A row leaves
the spool only through :meth:`Spool.ack`, which the forwarder calls on the
broker's PUBACK, or through eviction, which is counted.

Commit batching
---------------
:class:`AcceptBatcher` groups frames into one transaction: it commits when
``max_frames`` (default 256) frames are waiting or when the oldest waiting
frame is ``window_s`` (default 50 ms) old, whichever comes first. A frame
handed to the batcher but not yet committed is NOT accepted: a crash loses at
most one window of frames, which were never acknowledged to anybody. The
batcher calls ``on_commit(batch)`` after each commit (the daemon counts the
frames as accepted there and wakes the forwarder).

Durability (``fsync``)
----------------------
``fsync="full"`` (the default): ``PRAGMA synchronous=FULL``; every accept
commit fsyncs the write-ahead log, so a committed frame survives a power cut
as far as the storage honours fsync (SD cards may not). With 50 ms batching
this is at most 20 fsyncs a second, far below what SQLite does (about 8.7k
single-row commits/s, 235k rows/s in batches of 100 on the reference box).
``fsync="normal"``: ``PRAGMA synchronous=NORMAL``; commits survive a crash or
kill -9 of the process, but the WAL is only synced at checkpoints, so a power
cut can lose what was committed since the last checkpoint. The spool runs a
passive checkpoint at most every ``checkpoint_interval_s`` (1 s) on accept,
which bounds that power-loss window to about one second plus one batch
window. Acknowledgements (deletes) always commit with ``synchronous=NORMAL``:
losing one to a power cut only means a duplicate delivery, which the
idempotency key absorbs; the next FULL commit syncs them as well.

Bounds and overflow policy
--------------------------
``max_bytes`` bounds the stored rows (topic + payload + a fixed per-row
overhead of ``ROW_OVERHEAD`` bytes for keys and indexes); the database file
can be somewhat larger (free pages after a drain are reused, not returned).
When an accept goes over it, the oldest routine rows are evicted first and
rows carrying an alarm only once no routine row is left. ``max_age_s``
bounds age: rows older than that (by ``received_at``) are evicted, routine
and alarm alike, checked at most once a second. Every eviction is counted in
persisted counters (``evicted_total`` and by reason and class) reported by
:meth:`Spool.stats`, and logged.

A file system that fills up before ``max_bytes`` is reached (SQLITE_FULL)
makes the disk the bound. On a full disk SQLite can write nothing, not even a
delete (the WAL cannot grow, a checkpoint cannot extend the file), so the
spool holds ``RESERVE_BYTES`` (8 MiB, at most max_bytes/4) in
``<path>.reserve`` from its start and gives it back at the first SQLITE_FULL;
the WAL is then checkpointed, the failed transaction is rolled back, the limit
is lowered below what is stored (by a tenth, or twice the batch) until the
next start, and the batch is retried once with room made first by the same
policy, counted as size evictions. Freed pages are reused inside the file,
so later inserts and checkpoints need no new disk space. A checkpoint that
fails after a commit is logged and retried; it never un-accepts the batch.

Delivery order
--------------
Row ids come from ``AUTOINCREMENT`` and are never reused, so an id held by
the forwarder for an in-flight message can never name a newer row.
:meth:`Spool.pending` returns rows in id order, which is acceptance order and,
per device, frame-counter order.

Schema and recovery
-------------------
The schema version is ``PRAGMA user_version`` (``SCHEMA_VERSION``); older
files are migrated step by step at open, newer ones are refused. A file that
is not a readable database, or fails ``PRAGMA quick_check``, is moved aside
as ``<path>.corrupt-<UTC time>`` with one error log line, whatever rows and
replay counters can still be read from it are copied into a fresh spool.
quick_check reads the whole file: about 0.9 s for 1,000,000 rows (840 MB)
from the page cache here, longer from a cold SD card, once per start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.dbfile import (
    CorruptFile,
    bound_queries,
    is_corruption,
    move_aside,
    quick_check,
)
from gateway.errors import KnuteError

log = logging.getLogger("knute.spool")

SCHEMA_VERSION = 2
ROW_OVERHEAD = 64          # bytes counted per row beyond topic and payload
_CHUNK = 500               # ids per IN (...) statement, below every SQLite variable limit
_AGE_CHECK_S = 1.0
RESERVE_BYTES = 8 * 1024 * 1024   # disk held back for a full file system (max_bytes/4 at most)

# Persisted counters (table meta). evicted_total is the sum of the four evicted_* classes.
COUNTER_KEYS = (
    "accepted_total",
    "acked_total",
    "evicted_total",
    "evicted_size_routine",
    "evicted_size_alarm",
    "evicted_age_routine",
    "evicted_age_alarm",
)

# Migrations: MIGRATIONS[v] turns a version-v file into version v+1.
_SCHEMA_V2 = """
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX rows_age ON rows(received_at);
CREATE TABLE replay (device_id INTEGER PRIMARY KEY, fcnt INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Version 1 kept rows without kind and size, had no persisted counters, and
# no age index; its replay table is unchanged.
_MIGRATE_1_TO_2 = f"""
CREATE TABLE rows_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL,
    size INTEGER NOT NULL
);
INSERT INTO rows_v2 (id, device_id, fcnt, kind, topic, payload, alarm, received_at, size)
    SELECT id, device_id, fcnt,
           -- the kind is the topic's second level: <prefix>/<kind>/<device>/up
           substr(topic, instr(topic, '/') + 1,
                  instr(substr(topic, instr(topic, '/') + 1), '/') - 1),
           topic, payload, alarm, received_at,
           length(CAST(topic AS BLOB)) + length(payload) + {ROW_OVERHEAD}
    FROM rows ORDER BY id;
DROP TABLE rows;
ALTER TABLE rows_v2 RENAME TO rows;
CREATE INDEX rows_age ON rows(received_at);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

MIGRATIONS: dict[int, str] = {1: _MIGRATE_1_TO_2}


class SpoolError(KnuteError):
    """The spool cannot do what was asked (disk full, newer schema, I/O error)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """One verified, deduplicated frame ready to spool."""

    device_id: int
    fcnt: int
    kind: str
    topic: str             # full MQTT topic, built by message.topic()
    payload: bytes         # JSON bytes, built by message.reading_json()
    alarm: bool            # any alarm/fault bit set -> evicted last
    received_at: float     # unix seconds


class Row(NamedTuple):
    """One spooled frame as the forwarder reads it; ``row_id`` is what ack() takes."""

    row_id: int
    device_id: int
    fcnt: int
    kind: str
    topic: str
    payload: bytes
    alarm: bool
    received_at: float


def row_size(topic: str, payload: bytes) -> int:
    """The bytes one row counts against ``max_bytes``."""
    return len(topic.encode()) + len(payload) + ROW_OVERHEAD


class Spool:
    """A durable, bounded queue of accepted frames plus the replay counters.

    Thread-safe: one SQLite connection behind a lock, so the ingest side
    (accept) and the forwarder (pending, ack) can share one instance.
    """

    def __init__(self, path: str, *, max_bytes: int, max_age_s: float,
                 fsync: str = "full", checkpoint_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        if fsync not in ("full", "normal"):
            raise SpoolError(f"spool fsync must be 'full' or 'normal', not {fsync!r}")
        if max_bytes <= 0 or max_age_s <= 0:
            raise SpoolError("spool max_bytes and max_age_s must be positive")
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self._sync_pragma = "FULL" if fsync == "full" else "NORMAL"
        self._checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_age_check = 0.0
        self._last_checkpoint = time.monotonic()
        self._disk_limit = max_bytes        # lowered when the file system fills up
        self.reserve_path = path + ".reserve"
        self._reserve_bytes = min(RESERVE_BYTES, max(0, max_bytes // 4))
        self._db = self._open_checked(path)
        self._make_reserve()
        self._counters = self._load_counters()
        row = self._db.execute("SELECT count(*), total(size) FROM rows").fetchone()
        self._depth = int(row[0])
        self._bytes = int(row[1])
        with self._lock:
            self._begin()
            try:
                self._evict(self._clock(), force_age=True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- opening, schema, recovery ------------------------------------------------------

    def _connect(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                             timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync_pragma}")
        db.execute("PRAGMA journal_size_limit=67108864")
        db.execute("PRAGMA foreign_keys=OFF")
        return db

    def _open_checked(self, path: str) -> sqlite3.Connection:
        """Open (and migrate) the file, or move a corrupt one aside and start fresh."""
        try:
            db = self._connect(path)
            try:
                quick_check(db)
            except CorruptFile:
                db.close()
                raise
            self._migrate(db)
            return db
        except SpoolError:
            raise
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                # Busy, locked, read-only, I/O error, disk full: the file may be fine;
                # moving it aside would throw away accepted frames and replay counters.
                raise SpoolError(f"spool {path}: {exc}") from exc
            moved = move_aside(path)
            log.error("spool %s is corrupt (%s): moved aside to %s, starting a fresh spool",
                      path, exc, moved)
            db = self._connect(path)
            self._migrate(db)
            _salvage(moved, db)
            return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            db.close()
            raise SpoolError(f"spool {self.path} has schema version {version}, newer than "
                             f"this gateway's {SCHEMA_VERSION}; upgrade the gateway")
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                db.close()
                raise SpoolError(f"{self.path} is an SQLite file but not a knute spool")
            db.execute("BEGIN IMMEDIATE")
            for statement in _statements(_SCHEMA_V2):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
            version = SCHEMA_VERSION
        while version < SCHEMA_VERSION:
            log.info("spool %s: migrating schema %d -> %d", self.path, version, version + 1)
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={version + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            version += 1
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
                       [(key,) for key in COUNTER_KEYS])
        db.execute("COMMIT")

    def _load_counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {str(key): int(value) for key, value in rows}

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _bump(self, deltas: dict[str, int]) -> None:
        items = [(n, k) for k, n in deltas.items() if n]
        if items:
            self._db.executemany("UPDATE meta SET value = value + ? WHERE key = ?", items)

    # -- the API ------------------------------------------------------------------------

    def accept(self, batch: Sequence[Accepted]) -> None:
        """Insert the rows and advance the counters (max per device) in one transaction.

        Returns after the commit, the commit point of "accepted". Evicts per
        the overflow policy when over ``max_bytes`` or ``max_age_s``, in the
        same transaction, counting every eviction. Raises SpoolError if the
        transaction fails (nothing of the batch is then accepted).
        """
        if not batch:
            return
        rows = []
        newest: dict[int, int] = {}
        added = 0
        for item in batch:
            size = row_size(item.topic, item.payload)
            added += size
            rows.append((item.device_id, item.fcnt, item.kind, item.topic, item.payload,
                         1 if item.alarm else 0, item.received_at, size))
            if newest.get(item.device_id, -1) < item.fcnt:
                newest[item.device_id] = item.fcnt
        with self._lock:
            try:
                self._accept_rows(rows, newest, added, make_room=False)
            except sqlite3.Error as exc:
                if not _is_disk_full(exc):
                    raise SpoolError(f"spool {self.path}: accept failed: {exc}") from exc
                # The file system is full before max_bytes: the disk becomes the bound.
                # Lower the limit below what is stored now, evict by the usual policy
                # (oldest routine rows first, alarms last, counted) in the same
                # transaction as the insert, and try once more. Deleted rows free
                # pages inside the file, so later inserts and checkpoints need no
                # new disk space.
                self._disk_limit = max(0, min(self._bytes, self._disk_limit)
                                       - max(2 * added, self._bytes // 10))
                log.error("spool %s: file system full at %d bytes of rows; spool limit "
                          "lowered to %d bytes until restart, evicting to make room",
                          self.path, self._bytes, self._disk_limit)
                self._room_to_write()
                try:
                    self._accept_rows(rows, newest, added, make_room=True)
                except sqlite3.Error as again:
                    raise SpoolError(f"spool {self.path}: accept failed: {again}") from again
            self._maybe_checkpoint()

    def _accept_rows(self, rows: Sequence[tuple[object, ...]], newest: dict[int, int], added: int,
                     *, make_room: bool) -> None:
        """The accept transaction (caller holds the lock); state restored on failure."""
        depth, nbytes, counters = self._depth, self._bytes, dict(self._counters)
        try:
            self._begin()
            try:
                if make_room:
                    self._evict(self._clock(), room=added)
                self._db.executemany(
                    "INSERT INTO rows (device_id, fcnt, kind, topic, payload, alarm, "
                    "received_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT INTO replay (device_id, fcnt) VALUES (?, ?) "
                    "ON CONFLICT(device_id) DO UPDATE SET fcnt = max(fcnt, excluded.fcnt)",
                    newest.items())
                self._bump({"accepted_total": len(rows)})
                self._counters["accepted_total"] += len(rows)
                self._depth += len(rows)
                self._bytes += added
                self._evict(self._clock())
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        except BaseException:
            self._depth, self._bytes, self._counters = depth, nbytes, counters
            raise

    def _make_reserve(self) -> None:
        """Hold ``RESERVE_BYTES`` of disk in a file that is given back when the disk fills.

        With a full file system SQLite can neither commit (the WAL cannot grow)
        nor checkpoint (the database file cannot take the WAL's new pages), so
        not even an eviction could be written. The reserve is what makes room.
        """
        want = self._reserve_bytes
        if not want:
            return
        with contextlib.suppress(OSError):
            if os.path.getsize(self.reserve_path) >= want:
                return
        try:
            with open(self.reserve_path, "wb") as fh:
                block = b"\0" * 65536
                for _ in range(0, want, len(block)):
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.warning("spool %s: cannot reserve %d bytes of disk (%s); a full disk may "
                        "then stop the spool until space is freed", self.path, want,
                        exc.strerror)
            with contextlib.suppress(OSError):
                os.unlink(self.reserve_path)

    def _room_to_write(self) -> None:
        """After SQLITE_FULL: give back the reserve and fold the WAL into the file."""
        if os.path.exists(self.reserve_path):
            with contextlib.suppress(OSError):
                os.unlink(self.reserve_path)
                log.error("spool %s: disk full: released the %d-byte reserve; it is taken "
                          "again at the next start", self.path, self._reserve_bytes)
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("spool %s: checkpoint on a full disk failed: %s", self.path, exc)

    def _maybe_checkpoint(self) -> None:
        # After the commit: a failure here (a full disk) never un-accepts the batch.
        # Once the disk has filled, every commit is checkpointed so the WAL stays small.
        disk_bound = self._disk_limit < self.max_bytes
        if self.fsync != "normal" and not disk_bound:
            return
        now = time.monotonic()
        if disk_bound or now - self._last_checkpoint >= self._checkpoint_interval_s:
            self._last_checkpoint = now
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("spool %s: checkpoint failed (%s); will retry", self.path, exc)

    def _evict(self, now: float, force_age: bool = False, room: int = 0) -> None:
        """Apply the age and size bounds inside the caller's transaction.

        ``room``: also free that many bytes below the limit (before an insert).
        The limit is ``max_bytes``, or less after the file system filled up.
        """
        deltas = dict.fromkeys(COUNTER_KEYS, 0)
        limit = max(0, min(self.max_bytes, self._disk_limit) - room)
        if force_age or now - self._last_age_check >= _AGE_CHECK_S:
            self._last_age_check = now
            cutoff = now - self.max_age_s
            n, alarms, size = self._db.execute(
                "SELECT count(*), total(alarm), total(size) FROM rows WHERE received_at < ?",
                (cutoff,)).fetchone()
            if n:
                self._db.execute("DELETE FROM rows WHERE received_at < ?", (cutoff,))
                deltas["evicted_age_alarm"] = int(alarms)
                deltas["evicted_age_routine"] = int(n) - int(alarms)
                self._depth -= int(n)
                self._bytes -= int(size)
        for alarm, key in ((0, "evicted_size_routine"), (1, "evicted_size_alarm")):
            while self._bytes > limit:
                over = self._bytes - limit
                victims = []
                freed = 0
                # Oldest first; alarms are rare, so this walk by id skips few rows.
                for row_id, size in self._db.execute(
                        "SELECT id, size FROM rows WHERE alarm = ? ORDER BY id LIMIT ?",
                        (alarm, _CHUNK)).fetchall():
                    victims.append((row_id,))
                    freed += size
                    if freed >= over:
                        break
                if not victims:
                    break
                self._db.executemany("DELETE FROM rows WHERE id = ?", victims)
                deltas[key] += len(victims)
                self._depth -= len(victims)
                self._bytes -= freed
        evicted = sum(deltas.values())
        if evicted:
            deltas["evicted_total"] = evicted
            self._bump(deltas)
            for k, n in deltas.items():
                self._counters[k] += n
            log.warning("spool %s: evicted %d rows (%s)", self.path, evicted,
                        ", ".join(f"{k}={n}" for k, n in deltas.items()
                                  if n and k != "evicted_total"))

    def counters(self) -> dict[int, int]:
        """Replay state: device_id -> last accepted frame counter."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, fcnt FROM replay").fetchall()
        return {int(d): int(f) for d, f in rows}

    def last_fcnt(self, device_id: int) -> int | None:
        """The last accepted frame counter of one device, or None if it has none."""
        with self._lock:
            row = self._db.execute("SELECT fcnt FROM replay WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return None if row is None else int(row[0])

    def reset_counter(self, device_id: int) -> None:
        """Forget a device's replay counter (operator action after a node reset)."""
        with self._lock:
            self._begin()
            self._db.execute("DELETE FROM replay WHERE device_id = ?", (device_id,))
            self._db.execute("COMMIT")
        log.warning("spool %s: replay counter of device %08x reset", self.path, device_id)

    def pending(self, limit: int, after_id: int = 0) -> list[Row]:
        """Up to ``limit`` rows with id > ``after_id``, oldest first (per-device order kept)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, device_id, fcnt, kind, topic, payload, alarm, received_at "
                "FROM rows WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [Row(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bool(r[6]), r[7])
                for r in rows]

    def ack(self, row_ids: Sequence[int]) -> int:
        """Delete delivered rows (broker PUBACK). Returns how many were still there.

        Ids already gone (evicted while in flight, or acked twice) are ignored.
        """
        if not row_ids:
            return 0
        with self._lock:
            try:
                deleted, freed = self._ack_rows(row_ids)
            except sqlite3.Error as exc:
                if not _is_disk_full(exc):
                    raise SpoolError(f"spool {self.path}: ack failed: {exc}") from exc
                self._room_to_write()
                try:
                    deleted, freed = self._ack_rows(row_ids)
                except sqlite3.Error as again:
                    raise SpoolError(f"spool {self.path}: ack failed: {again}") from again
            self._counters["acked_total"] += deleted
            self._depth -= deleted
            self._bytes -= freed
        return deleted

    def _ack_rows(self, row_ids: Sequence[int]) -> tuple[int, int]:
        """The ack transaction (caller holds the lock): (rows deleted, bytes freed)."""
        deleted = 0
        freed = 0
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._begin()
            try:
                for start in range(0, len(row_ids), _CHUNK):
                    chunk = list(row_ids[start:start + _CHUNK])
                    marks = ",".join("?" * len(chunk))
                    n, size = self._db.execute(
                        f"SELECT count(*), total(size) FROM rows WHERE id IN ({marks})",
                        chunk).fetchone()
                    if n:
                        self._db.execute(f"DELETE FROM rows WHERE id IN ({marks})", chunk)
                        deleted += int(n)
                        freed += int(size)
                self._bump({"acked_total": deleted})
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL at COMMIT).
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._db.execute(f"PRAGMA synchronous={self._sync_pragma}")
        return deleted, freed

    def stats(self) -> dict[str, int]:
        """depth, bytes, max_bytes, oldest_age_s and the persisted counters."""
        with self._lock:
            oldest = self._db.execute(
                "SELECT received_at FROM rows ORDER BY id LIMIT 1").fetchone()
            out = {"depth": self._depth, "bytes": self._bytes, "max_bytes": self.max_bytes}
            out.update(self._counters)
        out["oldest_age_s"] = 0 if oldest is None else max(0, int(self._clock() - oldest[0]))
        return out

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


class AcceptBatcher:
    """Groups accepted frames into one spool transaction per window.

    ``add()`` may be called from any thread; it commits in the caller's thread
    when ``max_frames`` are waiting. ``start()`` runs a small thread that
    commits whatever has waited ``window_s``; without it, call ``flush()``
    (or ``poll()``) from the ingest loop. ``on_commit(batch)`` runs after each
    successful commit. A failed commit raises SpoolError from whichever call
    committed; those frames are not accepted.
    """

    def __init__(self, spool: Spool, *, window_s: float = 0.05, max_frames: int = 256,
                 on_commit: Callable[[Sequence[Accepted]], None] | None = None) -> None:
        self.spool = spool
        self.window_s = window_s
        self.max_frames = max_frames
        self.on_commit = on_commit
        self._waiting: list[Accepted] = []
        self._first_at = 0.0
        self._lock = threading.Lock()          # guards _waiting
        self._commit_lock = threading.Lock()   # keeps commits in add() order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def add(self, item: Accepted) -> None:
        """Queue one frame; commits at once if the batch is full."""
        with self._lock:
            if not self._waiting:
                self._first_at = time.monotonic()
            self._waiting.append(item)
            full = len(self._waiting) >= self.max_frames
        if full:
            self.flush()

    def add_many(self, items: Iterable[Accepted]) -> None:
        """Queue several frames (commits whenever a batch fills)."""
        for item in items:
            self.add(item)

    def poll(self) -> None:
        """Commit if the oldest waiting frame has waited ``window_s``."""
        with self._lock:
            due = bool(self._waiting) and time.monotonic() - self._first_at >= self.window_s
        if due:
            self.flush()

    def flush(self) -> None:
        """Commit everything waiting now."""
        with self._commit_lock:
            with self._lock:
                batch, self._waiting = self._waiting, []
            if not batch:
                return
            self.spool.accept(batch)
            if self.on_commit is not None:
                self.on_commit(batch)

    def waiting(self) -> int:
        """Frames queued but not yet committed (not accepted yet)."""
        with self._lock:
            return len(self._waiting)

    def start(self) -> None:
        """Run the window timer in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="knute-spool-batcher",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        tick = max(self.window_s / 5, 0.001)
        while not self._stop.wait(tick):
            try:
                self.poll()
            except SpoolError as exc:
                self.errors += 1
                log.error("%s", exc)

    def stop(self) -> None:
        """Stop the timer thread and commit what is waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()


def _is_disk_full(exc: sqlite3.Error) -> bool:
    """True for SQLITE_FULL (the file system, or a size limit, has no room)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == 13
    return "full" in str(exc)


def _statements(script: str) -> list[str]:
    """Split a DDL script into statements (no semicolons inside our statements)."""
    out = []
    for part in script.split(";"):
        lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
        text = "\n".join(lines).strip()
        if text:
            out.append(text)
    return out


def _padded_copy(path: str) -> str:
    """``path``, or a copy padded with zeros to the size its header states.

    A truncated file is unreadable as a whole (SQLite calls it malformed at the
    first query); padded back to its size, every page that survived reads
    again and only the missing ones are damaged.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
        size = os.path.getsize(path)
    except OSError:
        return path
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return path
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    want = int.from_bytes(head[28:32], "big") * page_size
    if want <= size:
        return path
    copy = path + ".salvage"
    try:
        shutil.copyfile(path, copy)
        with open(copy, "r+b") as fh:
            fh.truncate(want)
    except OSError:
        return path
    return copy


def _read_rows(old: sqlite3.Connection, deadline: float) -> list[tuple[object, ...]]:
    """Every row still readable, in id order, stepping over damaged pages.

    Ids must rise: a damaged page that hands out an id at or below one already
    read ends that scan (its cells are not trusted), and the scan resumes past it.
    """
    rows: list[tuple[object, ...]] = []
    try:
        top = int(old.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'")
                  .fetchone()[0])
    except (sqlite3.Error, TypeError):
        top = None
    after, step = 0, 1
    while time.monotonic() < deadline:
        try:
            for r in old.execute("SELECT id, device_id, fcnt, kind, topic, payload, alarm, "
                                 "received_at FROM rows WHERE id > ? ORDER BY id", (after,)):
                if not isinstance(r[0], int) or r[0] <= after:
                    raise sqlite3.DatabaseError("row ids out of order")
                after, step = r[0], 1
                if (isinstance(r[1], int) and isinstance(r[2], int) and isinstance(r[3], str)
                        and isinstance(r[4], str) and isinstance(r[5], bytes)
                        and isinstance(r[6], int) and isinstance(r[7], int | float)):
                    rows.append(tuple(r[1:]))           # a damaged cell is left out
            return rows
        except sqlite3.Error:
            if top is None or after >= top:
                return rows
            after, step = after + step, step * 2
    return rows


def _salvage(moved: str, db: sqlite3.Connection) -> None:
    """Copy what can still be read from a corrupt spool (rows, replay counters)."""
    source = _padded_copy(moved)
    try:
        old = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    counters: dict[int, int] = {}
    rows: list[tuple[object, ...]] = []
    deadline = bound_queries(old)
    try:
        try:
            for device_id, fcnt in old.execute("SELECT device_id, fcnt FROM replay"):
                counters[int(device_id)] = max(int(fcnt), counters.get(int(device_id), -1))
        except sqlite3.Error:
            pass
        rows = _read_rows(old, deadline)
    finally:
        old.close()
        if source != moved:
            with contextlib.suppress(OSError):
                os.unlink(source)
    for r in rows:
        device_id, fcnt = int(r[0]), int(r[1])  # type: ignore[call-overload]
        counters[device_id] = max(fcnt, counters.get(device_id, -1))
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO rows (device_id, fcnt, kind, topic, payload, alarm, received_at, size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r, row_size(str(r[3]), bytes(r[4])))  # type: ignore[call-overload]
         for r in rows])
    db.executemany("INSERT INTO replay (device_id, fcnt) VALUES (?, ?)", counters.items())
    db.execute("COMMIT")
    log.error("spool %s: salvaged %d rows and %d replay counters from %s",
              moved.rsplit(".corrupt-", 1)[0], len(rows), len(counters), moved)

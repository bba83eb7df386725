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

Storage
-------
The pipeline hands over a ``message.Reading`` with its JSON, built with the
device's epoch (see below); the spool stores that JSON deflated with a preset
dictionary of typical readings (gateway.spool_schema), rebuilding it first if
the device's epoch changed meanwhile, and keeps its topic and kind in a
context row shared by the device's rows. A reading takes about 200 bytes of
file instead of about 840 as plain JSON (``knute bench gateway`` prints the
figure). Deflating costs about 20 µs of CPU per reading at accept, inflating
about 2 µs when the forwarder reads it (fixed Huffman codes: no code tables
to build per row). Rows handed in as finished messages
(topic + payload: condition messages, rows migrated from schema 3) are
stored as they are.

Ids and epochs
--------------
The replay table keeps, per device, the last accepted counter and the epoch:
how many times that counter was reset. :meth:`Spool.reset_counter` adds one
to the epoch in the same transaction that forgets the counter; a reading is
accepted with its device's epoch, which its id names
(``gateway.message.reading_id``). Within an epoch only higher counters are
accepted, so an id never names two different readings.

Parking
-------
:meth:`Spool.park` moves rows out of the delivery queue into the ``parked``
table (a message the broker refuses must not block the rows behind it). A
row whose message is over ``max_message_bytes``, or whose stored bytes cannot be
read back, is parked by :meth:`Spool.pending` itself and never published.
Parked rows are kept for inspection (``knute gateway parked``), bounded by
``MAX_PARKED_ROWS`` and ``max_parked_bytes``, the oldest dropped first.

Bounds and delivery order
-------------------------
``max_bytes`` and ``max_age_s`` bound the stored rows, and a full file
system makes the disk the bound: gateway.spool_bounds. The forwarder reads
rows in acceptance order and deletes them on PUBACK: gateway.spool_drain.

Schema and recovery
-------------------
The schema version is ``PRAGMA user_version`` (``SCHEMA_VERSION``, history
and migrations in gateway.spool_schema); older files are migrated step by
step at open, newer ones are refused. The file and its -wal and -shm files are
created 0600: readings name meters and addresses. A file that
is not a readable database, or fails ``PRAGMA quick_check``, is moved aside
as ``<path>.corrupt-<UTC time>`` with one error log line, whatever rows and
replay counters can still be read from it are copied into a fresh spool.
quick_check reads the whole file: about 0.9 s for 1,000,000 rows (840 MB)
from the page cache here, longer from a cold SD card, once per start.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from knute.gateway.dbfile import (
    SPOOL_APP_ID,
    CorruptFile,
    NotKnuteFile,
    check_identity,
    is_corruption,
    move_aside,
    quick_check,
)
from knute.gateway.spool_bounds import EVICTION_KEYS, RESERVE_BYTES, Bounds
from knute.gateway.spool_drain import Draining
from knute.gateway.spool_park import MAX_PARKED_ROWS, Parking
from knute.gateway.spool_rows import (
    Accepted,
    ContextTable,
    ParkedRow,
    Row,
    SpoolError,
    create_private,
    is_disk_full,
    read_parked,
    row_size,
    store_form,
)
from knute.gateway.spool_schema import (
    FORM_MESSAGE,
    ROW_OVERHEAD,
    SCHEMA_VERSION,
    SchemaError,
    migrate,
    salvage,
)

log = logging.getLogger("knute.spool")

__all__ = ["MAX_PARKED_ROWS", "ROW_OVERHEAD", "SCHEMA_VERSION", "AcceptBatcher", "Accepted",
           "ParkedRow", "Row", "Spool", "SpoolError", "read_parked", "row_size"]

# Larger than any reading the kinds table allows with the receivers bound (about 4 KB),
# and below every common broker limit (AWS IoT Core 128 KB, EMQX 1 MB by default).
DEFAULT_MAX_MESSAGE_BYTES = 65536

# parked_total: rows ever parked; parked_dropped: parked rows later dropped by the bound.
COUNTER_KEYS = ("accepted_total", "acked_total", *EVICTION_KEYS,
                "parked_total", "parked_dropped")


class Spool(Draining, Bounds, Parking):
    """A durable, bounded queue of accepted frames plus the replay counters and epochs.

    Thread-safe: one SQLite connection behind a lock, so the ingest side
    (accept) and the forwarder (pending, ack, park) can share one instance.
    """

    def __init__(self, path: str, *, max_bytes: int, max_age_s: float,
                 fsync: str = "full", checkpoint_interval_s: float = 1.0,
                 max_parked_bytes: int | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        if fsync not in ("full", "normal"):
            raise SpoolError(f"spool fsync must be 'full' or 'normal', not {fsync!r}")
        if max_bytes <= 0 or max_age_s <= 0 or max_message_bytes <= 0:
            raise SpoolError("spool max_bytes, max_age_s and max_message_bytes must be "
                             "positive")
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_message_bytes = max_message_bytes
        # Parked rows are few (a message no broker takes); a tenth of max_bytes, at
        # least 1 MiB, holds thousands of them without squeezing the queue.
        self.max_parked_bytes = (max(1 << 20, max_bytes // 10) if max_parked_bytes is None
                                 else max_parked_bytes)
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
        self._contexts = ContextTable()
        create_private(path)
        self._db = self._open_checked(path)
        self._make_reserve()
        self._counters = self._load_counters()
        self._epochs = {int(d): int(e) for d, e in self._db.execute(
            "SELECT device_id, epoch FROM replay WHERE epoch != 0")}
        row = self._db.execute("SELECT count(*), total(size) FROM rows").fetchone()
        self._depth = int(row[0])
        self._bytes = int(row[1])
        row = self._db.execute("SELECT count(*), total(size) FROM parked").fetchone()
        self._parked = int(row[0])
        self._parked_bytes = int(row[1])
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

    def _migrate(self, db: sqlite3.Connection) -> None:
        try:
            migrate(db, self.path, COUNTER_KEYS)
        except SchemaError as exc:
            db.close()
            raise SpoolError(str(exc)) from None

    def _open_checked(self, path: str) -> sqlite3.Connection:
        """Open (and migrate) the file, or move a corrupt one aside and start fresh."""
        try:
            check_identity(path, "spool", SPOOL_APP_ID, SCHEMA_VERSION)
        except NotKnuteFile as exc:      # not ours: never moved aside or replaced
            raise SpoolError(str(exc)) from None
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
            create_private(path)
            db = self._connect(path)
            self._migrate(db)
            salvage(moved, db)
            return db

    def _load_counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {str(key): int(value) for key, value in rows}

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL at COMMIT). Context ids
        # handed out in the failed transaction are gone with it.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        self._contexts.forget()

    def _bump(self, deltas: dict[str, int]) -> None:
        items = [(n, k) for k, n in deltas.items() if n]
        if items:
            self._db.executemany("UPDATE meta SET value = value + ? WHERE key = ?", items)

    # -- the API ------------------------------------------------------------------------

    def accept(self, batch: Sequence[Accepted]) -> None:
        """Insert the rows and advance the counters (max per device) in one transaction.

        Returns after the commit, the commit point of "accepted". Each row gets
        its device's current epoch. Evicts per the overflow policy when over
        ``max_bytes`` or ``max_age_s``, in the same transaction, counting every
        eviction. Raises SpoolError if the transaction fails (nothing of the
        batch is then accepted).
        """
        if not batch:
            return
        # The JSON of a reading names its epoch, so it is built with the epochs as
        # they are now (outside the lock: that is most of the work), and built again
        # under the lock for any device whose counter was reset in between.
        epochs = dict(self._epochs)
        parts = [self._part(item, epochs.get(item.device_id, 0)) for item in batch]
        newest: dict[int, int] = {}
        for item in batch:
            if newest.get(item.device_id, -1) < item.fcnt:
                newest[item.device_id] = item.fcnt
        with self._lock:
            parts = [part if part[1] == self._epochs.get(part[0].device_id, 0)
                     else self._part(part[0], self._epochs.get(part[0].device_id, 0))
                     for part in parts]
            added = sum(part[5] for part in parts)
            try:
                self._accept_rows(parts, newest, added, make_room=False)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
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
                    self._accept_rows(parts, newest, added, make_room=True)
                except sqlite3.Error as again:
                    raise SpoolError(f"spool {self.path}: accept failed: {again}") from again
            self._maybe_checkpoint()

    @staticmethod
    def _part(item: Accepted, epoch: int) -> tuple[Accepted, int, int, str, bytes, int]:
        """(item, epoch, form, context text, body, bytes counted) of one row to insert."""
        form, text, body = store_form(item, epoch)
        size = len(body) + ROW_OVERHEAD
        if form == FORM_MESSAGE:
            size += len(item.topic.encode())
        return item, epoch, form, text, body, size

    def _accept_rows(self, parts: Sequence[tuple[Accepted, int, int, str, bytes, int]],
                     newest: dict[int, int], added: int, *, make_room: bool) -> None:
        """The accept transaction (caller holds the lock); state restored on failure."""
        depth, nbytes, counters = self._depth, self._bytes, dict(self._counters)
        try:
            self._begin()
            try:
                if make_room:
                    self._evict(self._clock(), room=added)
                rows = [(item.device_id, item.fcnt, epoch,
                         self._contexts.id_of(self._db, form, text), body,
                         1 if item.alarm else 0, item.received_at, size)
                        for item, epoch, form, text, body, size in parts]
                self._db.executemany(
                    "INSERT INTO rows (device_id, fcnt, epoch, ctx, body, alarm, "
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
                self._rollback()
                raise
        except BaseException:
            self._depth, self._bytes, self._counters = depth, nbytes, counters
            raise

    def counters(self) -> dict[int, int]:
        """Replay state: device_id -> last accepted frame counter (devices that have one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, fcnt FROM replay WHERE fcnt >= 0").fetchall()
        return {int(d): int(f) for d, f in rows}

    def learn_counters(self, counters: dict[int, int]) -> None:
        """Raise replay counters to what other gateways accepted (never lowers one)."""
        if not counters:
            return
        with self._lock:
            self._begin()
            try:
                self._db.executemany(
                    "INSERT INTO replay (device_id, fcnt) VALUES (?, ?) "
                    "ON CONFLICT(device_id) DO UPDATE SET fcnt = max(fcnt, excluded.fcnt)",
                    counters.items())
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def last_fcnt(self, device_id: int) -> int | None:
        """The last accepted frame counter of one device, or None if it has none."""
        with self._lock:
            row = self._db.execute("SELECT fcnt FROM replay WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return None if row is None or row[0] < 0 else int(row[0])

    def epoch(self, device_id: int) -> int:
        """The device's epoch: how many times its counter was reset (part of the id)."""
        with self._lock:
            return self._epochs.get(device_id, 0)

    def epochs(self) -> dict[int, int]:
        """device_id -> epoch, for the devices whose epoch is not 0."""
        with self._lock:
            return dict(self._epochs)

    def reset_counter(self, device_id: int) -> int:
        """Forget a device's replay counter and start its next epoch; returns that epoch.

        Operator action after a node reset or re-provisioning: the node counts
        from 0 again, so its readings need ids the earlier ones never had.
        """
        with self._lock:
            self._begin()
            try:
                self._db.execute(
                    "INSERT INTO replay (device_id, fcnt, epoch) VALUES (?, -1, 1) "
                    "ON CONFLICT(device_id) DO UPDATE SET fcnt = -1, epoch = epoch + 1",
                    (device_id,))
                epoch = int(self._db.execute("SELECT epoch FROM replay WHERE device_id = ?",
                                             (device_id,)).fetchone()[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._epochs[device_id] = epoch
        log.warning("spool %s: replay counter of device %08x reset, epoch %d begins",
                    self.path, device_id, epoch)
        return epoch

    @property
    def depth(self) -> int:
        """Rows in the queue (``stats()["depth"]`` without a query or the lock)."""
        return self._depth

    def stats(self) -> dict[str, int]:
        """depth, bytes, max_bytes, oldest_age_s, parked, parked_bytes and the counters."""
        with self._lock:
            oldest = self._db.execute(
                "SELECT received_at FROM rows ORDER BY id LIMIT 1").fetchone()
            out = {"depth": self._depth, "bytes": self._bytes, "max_bytes": self.max_bytes,
                   "parked": self._parked, "parked_bytes": self._parked_bytes}
            out.update(self._counters)
        out["oldest_age_s"] = 0 if oldest is None else max(0, int(self._clock() - oldest[0]))
        return out

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


# The batcher lives in its own module; imported here so callers keep one import.
from knute.gateway.spool_batch import AcceptBatcher  # noqa: E402

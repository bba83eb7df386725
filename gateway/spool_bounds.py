"""The spool's bounds: size and age eviction, and what happens when the disk fills up.

A mixin of gateway.spool.Spool (it works on the spool's connection and
running totals, inside the caller's transaction and lock).

Bounds and overflow policy
--------------------------
``max_bytes`` bounds the stored rows (their stored bytes + a fixed per-row
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
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING

from knute.gateway.spool_rows import make_reserve

log = logging.getLogger("knute.spool")

_CHUNK = 500               # ids per IN (...) statement, below every SQLite variable limit
_AGE_CHECK_S = 1.0
RESERVE_BYTES = 8 * 1024 * 1024   # disk held back for a full file system (max_bytes/4 at most)

# Persisted counters (table meta). evicted_total is the sum of the four evicted_* classes.
EVICTION_KEYS = (
    "evicted_total",
    "evicted_size_routine",
    "evicted_size_alarm",
    "evicted_age_routine",
    "evicted_age_alarm",
)


class Bounds:
    """Eviction by size and age, the disk reserve and checkpoints, for the Spool."""

    path: str
    max_bytes: int
    max_age_s: float
    fsync: str
    reserve_path: str
    _db: sqlite3.Connection
    _depth: int
    _bytes: int
    _counters: dict[str, int]
    _disk_limit: int
    _reserve_bytes: int
    _last_age_check: float
    _last_checkpoint: float
    _checkpoint_interval_s: float

    if TYPE_CHECKING:  # the Spool's; a stub here would come first in its method order
        def _bump(self, deltas: dict[str, int]) -> None: ...

    def _make_reserve(self) -> None:
        """Hold the reserve (see make_reserve); a failure is logged, not fatal."""
        make_reserve(self.reserve_path, self._reserve_bytes)

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
        deltas = dict.fromkeys(EVICTION_KEYS, 0)
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

"""Parking: rows taken out of the delivery queue and kept for inspection.

A mixin of gateway.spool.Spool (it works on the spool's connection, lock and
running totals); see the spool's docstring, "Parking".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence

from knute.gateway.spool_rows import (
    PARKED_COLUMNS,
    STORED_COLUMNS,
    ContextTable,
    ParkedRow,
    SpoolError,
    message_of,
    parked_row,
    stored_row,
)

log = logging.getLogger("knute.spool")

MAX_PARKED_ROWS = 10_000  # parked rows kept at most (and max_parked_bytes), oldest dropped
_CHUNK = 500              # ids per IN (...) statement


class Parking:
    """park(), parked() and the bound on the parked table, for the Spool."""

    path: str
    max_parked_bytes: int
    _db: sqlite3.Connection
    _lock: threading.Lock
    _clock: Callable[[], float]
    _depth: int
    _bytes: int
    _parked: int
    _parked_bytes: int
    _counters: dict[str, int]
    _contexts: ContextTable

    def _begin(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _bump(self, deltas: dict[str, int]) -> None:
        raise NotImplementedError


    def park(self, row_ids: Sequence[int], reason: str) -> int:
        """Move rows out of the delivery queue into the parked table; returns how many moved.

        For a message that must not block the rows behind it (the broker refuses
        it, or it is over the size bound). Parked rows are never published; they
        are kept with their topic and message for inspection (:meth:`parked`,
        ``knute gateway parked``) up to ``MAX_PARKED_ROWS`` rows and
        ``max_parked_bytes``, the oldest parked dropped first (counted in
        ``parked_dropped``). Ids already gone are ignored.
        """
        if not row_ids:
            return 0
        reason = reason.strip() or "unspecified"
        with self._lock:
            state = (self._depth, self._bytes, self._parked, self._parked_bytes,
                     dict(self._counters))
            try:
                moved = self._park_rows(row_ids, reason)
            except sqlite3.Error as exc:
                (self._depth, self._bytes, self._parked, self._parked_bytes,
                 self._counters) = state
                raise SpoolError(f"spool {self.path}: park failed: {exc}") from exc
        if moved:
            log.error("spool %s: parked %d rows (%s); they will not be published",
                      self.path, moved, reason)
        return moved

    def _park_rows(self, row_ids: Sequence[int], reason: str) -> int:
        """The park transaction (caller holds the lock)."""
        moved = 0
        now = self._clock()
        self._begin()
        try:
            for start in range(0, len(row_ids), _CHUNK):
                chunk = list(row_ids[start:start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                stored = [stored_row(r) for r in self._db.execute(
                    f"SELECT {STORED_COLUMNS} FROM rows WHERE id IN ({marks})", chunk)]
                if not stored:
                    continue
                keep = []
                for s in stored:
                    topic, kind, payload = message_of(s, self._contexts.text_of(self._db, s.ctx))
                    if topic is None:         # unreadable: keep its stored bytes as they are
                        topic, kind, payload = "", "", s.body
                    keep.append((s.row_id, s.device_id, s.fcnt, kind, topic, payload,
                                 int(s.alarm), s.received_at, s.size, reason, now))
                self._db.executemany(
                    "INSERT OR REPLACE INTO parked (id, device_id, fcnt, kind, topic, payload, "
                    "alarm, received_at, size, reason, parked_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", keep)
                self._db.execute(f"DELETE FROM rows WHERE id IN ({marks})", chunk)
                size = sum(s.size for s in stored)
                moved += len(stored)
                self._depth -= len(stored)
                self._bytes -= size
                self._parked += len(stored)
                self._parked_bytes += size
            dropped = self._bound_parked()
            self._bump({"parked_total": moved, "parked_dropped": dropped})
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._counters["parked_total"] += moved
        self._counters["parked_dropped"] += dropped
        return moved

    def _bound_parked(self) -> int:
        """Drop the oldest parked rows over the bounds (inside the caller's transaction)."""
        dropped = 0
        while self._parked > MAX_PARKED_ROWS or (
                self._parked_bytes > self.max_parked_bytes and self._parked > 0):
            over_rows = self._parked - MAX_PARKED_ROWS
            over_bytes = self._parked_bytes - self.max_parked_bytes
            victims = []
            freed = 0
            for row_id, size in self._db.execute(
                    "SELECT id, size FROM parked ORDER BY parked_at, id LIMIT ?",
                    (_CHUNK,)).fetchall():
                victims.append((row_id,))
                freed += size
                if len(victims) >= over_rows and freed >= over_bytes:
                    break
            if not victims:
                break
            self._db.executemany("DELETE FROM parked WHERE id = ?", victims)
            dropped += len(victims)
            self._parked -= len(victims)
            self._parked_bytes -= freed
        if dropped:
            log.warning("spool %s: dropped %d parked rows over the bound", self.path, dropped)
        return dropped

    def parked(self, limit: int = 100) -> list[ParkedRow]:
        """Up to ``limit`` parked rows, most recently parked first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {PARKED_COLUMNS} FROM parked ORDER BY parked_at DESC, id DESC "
                "LIMIT ?", (limit,)).fetchall()
        return [parked_row(r) for r in rows]

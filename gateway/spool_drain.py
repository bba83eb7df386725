"""The spool's drain path: the forwarder reads rows in order and deletes them on PUBACK.

A mixin of gateway.spool.Spool (it works on the spool's connection, lock and
running totals).

Delivery order
--------------
Row ids come from ``AUTOINCREMENT`` and are never reused, so an id held by
the forwarder for an in-flight message can never name a newer row.
:meth:`Spool.pending` returns rows in id order, which is acceptance order and,
per device, frame-counter order.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from knute.gateway.spool_rows import (
    RENDER_COLUMNS,
    ContextTable,
    Row,
    SpoolError,
    is_disk_full,
    render_rows,
)


def id_runs(row_ids: Sequence[int]) -> list[tuple[int, int]]:
    """The ids as runs of consecutive integers, (first, last) each, in ascending order.

    Deleting ``id BETWEEN first AND last`` for each run deletes exactly the
    rows ``id IN (row_ids)`` would: every integer of a run is one of the ids. A
    drain acknowledges rows in the order it read them, so a batch is one run or
    a few (one more for each row parked or evicted in between), and the two
    statements stay the same prepared ones whatever the batch.
    """
    runs: list[tuple[int, int]] = []
    ordered = sorted(set(row_ids))
    if not ordered:
        return runs
    first = last = ordered[0]
    for row_id in ordered[1:]:
        if row_id != last + 1:
            runs.append((first, last))
            first = row_id
        last = row_id
    runs.append((first, last))
    return runs


class Draining:
    """pending() and ack(), for the Spool."""

    path: str
    max_message_bytes: int
    _db: sqlite3.Connection
    _lock: threading.Lock
    _contexts: ContextTable
    _sync_pragma: str
    _depth: int
    _bytes: int
    _counters: dict[str, int]

    if TYPE_CHECKING:  # the Spool's; stubs here would come first in its method order
        def _begin(self) -> None: ...

        def _bump(self, deltas: dict[str, int]) -> None: ...

        def _room_to_write(self) -> None: ...

        def park(self, row_ids: Sequence[int], reason: str) -> int: ...

    def pending(self, limit: int, after_id: int = 0) -> list[Row]:
        """Up to ``limit`` rows with id > ``after_id``, oldest first (per-device order kept).

        Each row carries the topic and JSON bytes to publish. A row whose
        message is over ``max_message_bytes``, or whose stored bytes cannot be
        read back, is parked instead (never published) and left out.
        """
        while True:
            with self._lock:
                raw = self._db.execute(
                    f"SELECT {RENDER_COLUMNS} FROM rows WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit)).fetchall()
                contexts = {ctx: self._contexts.parsed(self._db, ctx)
                            for ctx in {r[3] for r in raw}}
            out, bad = render_rows(raw, contexts, self.max_message_bytes)
            for reason, ids in bad.items():
                self.park(ids, reason)
            if out or not bad or not raw:
                return out
            after_id = raw[-1][0]               # a whole batch parked: read on

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
                if not is_disk_full(exc):
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
                for first, last in id_runs(row_ids):
                    n, size = self._db.execute(
                        "SELECT count(*), total(size) FROM rows WHERE id BETWEEN ? AND ?",
                        (first, last)).fetchone()
                    if n:
                        self._db.execute("DELETE FROM rows WHERE id BETWEEN ? AND ?",
                                         (first, last))
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

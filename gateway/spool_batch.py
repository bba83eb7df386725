"""AcceptBatcher: groups accepted frames into one spool transaction per window.

See gateway.spool ("Commit batching") for what a batch means for acceptance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from knute.gateway.errors import KnuteError

if TYPE_CHECKING:
    from knute.gateway.spool import Accepted, Spool

log = logging.getLogger("knute.spool")


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
            except KnuteError as exc:          # SpoolError: logged, the next poll retries
                self.errors += 1
                log.error("%s", exc)

    def stop(self) -> None:
        """Stop the timer thread and commit what is waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()

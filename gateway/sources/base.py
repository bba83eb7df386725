"""What every source shares: the link state enum, reconnect backoff, the sink type,
and the reader thread."""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Callable

from gateway.pipeline import Reception

Sink = Callable[[Reception], None]


class LinkState(enum.Enum):
    """The state of a source's link, reported in ``knute gateway status``."""

    CLOSED = "closed"        # not opened yet
    OPENING = "opening"      # trying to open
    OPEN = "open"            # reading
    BACKOFF = "backoff"      # lost or failed to open; waiting before the next attempt
    STOPPED = "stopped"      # stop() was called


class Backoff:
    """Capped exponential backoff with jitter for reopening a lost link.

    The n-th delay (n = 0, 1, ...) is drawn uniformly from [d/2, d] with
    d = min(maximum, initial * 2**n), so a fleet of gateways that lost the same
    USB hub or network does not retry in lock-step, and no delay exceeds
    ``maximum``. ``reset()`` after a link has been up again.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (seconds)."""
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``initial``."""
        self.attempt = 0


class ThreadedSource:
    """A source that reads on a thread of its own until ``stop()``.

    Subclasses set ``name`` and ``thread_prefix``, loop in ``_run()`` while
    ``self._stop`` is unset, and release their link in ``_shutdown()``.
    """

    name: str
    thread_prefix = "source"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = LinkState.CLOSED

    @property
    def state(self) -> LinkState:
        """The link state."""
        return self._state

    def _set_state(self, state: LinkState) -> None:
        if state != self._state:
            logging.getLogger(f"knute.source.{self.thread_prefix}").debug(
                "%s: %s -> %s", self.name, self._state.value, state.value)
        self._state = state

    def start(self) -> None:
        """Start the reader thread."""
        self._thread = threading.Thread(target=self._run,
                                        name=f"knute-{self.thread_prefix}-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading, release the link and report STOPPED."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._shutdown()
        self._set_state(LinkState.STOPPED)

    def _run(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

"""What every source shares: the sink type and the reader thread (the link state
enum and the reconnect backoff are gateway.link's, shared with the forwarder)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from knute.gateway.link import Backoff, LinkState
from knute.gateway.model import Reception

__all__ = ["Backoff", "LinkState", "Sink", "ThreadedSource"]

Sink = Callable[[Reception], None]


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

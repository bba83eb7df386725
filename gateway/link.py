"""What every link of the gateway shares: one state enum and one reconnect backoff.

A link is anything the gateway opens and keeps open: a serial radio, a UDP
listener, the broker connection. Each reports a ``LinkState`` in ``knute
gateway status`` and reopens with ``Backoff`` after a loss. Pure: no I/O here.
"""

from __future__ import annotations

import enum
import random


class LinkState(enum.Enum):
    """The state of a link (a source's device or socket, the broker connection)."""

    CLOSED = "closed"        # not opened yet, or lost and not retrying yet
    OPENING = "opening"      # trying to open (broker: connecting, waiting for CONNACK)
    OPEN = "open"            # reading (broker: connected)
    BACKOFF = "backoff"      # lost or failed to open; waiting before the next attempt
    STOPPING = "stopping"    # stop() was called; delivering what is left
    STOPPED = "stopped"      # stopped for good


class Backoff:
    """Capped exponential backoff with jitter for reopening a lost link.

    The n-th delay (n = 0, 1, ...) is drawn uniformly from [d/2, d] with
    d = min(max_s, min_s * 2**n), so a fleet of gateways that lost the same
    USB hub, network or broker does not retry in lock-step, and no delay
    exceeds ``max_s``. ``reset()`` once the link has been up again.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError("backoff needs 0 < min_s <= max_s")
        self.min_s = min_s
        self.max_s = max_s
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (seconds); counts one more attempt."""
        ceiling = min(self.max_s, self.min_s * float(2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``min_s``."""
        self.attempts = 0

    def next_capped(self, cap_s: float) -> float:
        """The next delay, but at most ``cap_s`` (jittered below it like any delay)."""
        delay = self.next()
        return delay if delay <= cap_s else self._rng.uniform(cap_s / 2, cap_s)

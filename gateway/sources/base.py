"""What every source shares: the link state enum, reconnect backoff, the sink type."""

from __future__ import annotations

import enum
import random
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

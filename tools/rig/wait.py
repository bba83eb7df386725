"""The rig's one way to wait: poll a condition until it holds, bounded in time.

Tests, the demo and the benchmarks wait on conditions (a status field, a count
of deliveries, a line in a log), never on sleeps: under load a sleep is either
too short (a flaky failure) or too long (a slow suite).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from knute.gateway.errors import KnuteError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0   # an upper bound: a wait ends as soon as its condition holds
POLL_S = 0.02


class WaitTimeout(KnuteError, AssertionError):
    """A condition did not hold in time.

    A ``KnuteError``, so ``knute bench`` and ``knute demo`` report it as one line;
    an ``AssertionError``, so pytest shows it as a failed check.
    """


def wait_for(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S,
             what: str = "a condition") -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises ``WaitTimeout`` naming ``what`` after ``timeout`` seconds. Exceptions
    from ``condition`` pass through (a process that died says so at once).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)

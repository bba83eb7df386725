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
POLL_S = 0.02              # the first polls: a condition that holds soon is seen at once
MAX_POLL_S = 0.1           # the longest pause between two polls
# A long wait polls less often: the pause grows to this share of the time waited so far
# (up to MAX_POLL_S), so polling adds at most 5 % to a wait's length. Each poll of a
# gateway's status, a log or a CLI costs CPU in the test and often in the process it asks,
# and the suite's many waits share two cores: 20 ms polls all through a minute's wait
# were 3000 status requests.
POLL_SHARE = 0.05


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
    Polls every ``POLL_S`` at first, then less often as the wait goes on (see
    ``poll_pause``).
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        asked = time.monotonic()
        value = condition()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(poll_pause(now - started, now - asked), max(0.0, deadline - now)))


def poll_pause(waited_s: float, poll_s: float) -> float:
    """The pause before the next poll after ``waited_s`` of waiting, the last poll having
    taken ``poll_s``: ``POLL_S``, growing to ``POLL_SHARE`` of the wait (at most
    ``MAX_POLL_S``), and never shorter than the poll itself (a condition that starts a
    process polls at most half the time)."""
    return max(POLL_S, min(MAX_POLL_S, POLL_SHARE * waited_s), poll_s)

"""A simulation's clock: the wall clock run ``speed`` times faster from an epoch.

Simulations (``knute demo``, ``knute simulate --city``) run a gateway on a
clock faster than the wall clock (``[gateway] clock_speed``) so that a backend
which works by reading time sees days pass in minutes. The clock reads
``simulated + (t - wall) * speed`` at wall time ``t`` from its epoch, the pair
(``simulated``, ``wall``). The epoch is either fixed in the configuration
(``clock_start``: the clock meets the wall clock there) or given at run time
by a clock file (``clock_file``), a JSON object ``{"simulated": <unix s>,
"wall": <unix s>}`` that whoever runs the simulation writes once every process
of it is up: until the file exists the clock stands still, so the time a
loaded machine takes to start the processes does not eat simulated days.
``knute simulate --clock-file`` waits for the same file.

The file is read at most every ``POLL_S`` until it is found, then never again:
write it whole (to a temporary name, then rename) with ``wall`` a moment
ahead, and every clock on it starts at the same instant.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 0.02


class ClockFileError(ValueError):
    """A clock file that is not ``{"simulated": <number>, "wall": <number>}``."""


def read_clock_file(path: str) -> tuple[float, float] | None:
    """(simulated, wall) from the clock file at ``path``; None while it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClockFileError(f"{path}: cannot read the clock file: {exc.strerror}") from None
    try:
        doc: Any = json.loads(text)
    except ValueError:
        raise ClockFileError(f"{path}: the clock file is not JSON: {text[:60]!r}") from None
    if not isinstance(doc, dict):
        raise ClockFileError(f"{path}: the clock file must be an object "
                             '{"simulated": <unix s>, "wall": <unix s>}')
    pair = []
    for key in ("simulated", "wall"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < 0:
            raise ClockFileError(f"{path}: {key!r} must be unix seconds, not {value!r}")
        pair.append(float(value))
    return pair[0], pair[1]


class SimulatedClock:
    """The clock (see the module docstring); ``at(t)`` is wall time ``t`` on it.

    ``epoch``: (simulated, wall) fixed when it is made (``clock_start`` of a
    configuration is ``(clock_start, clock_start)``). ``clock_file``: the epoch
    from that file instead; until it exists the clock reads ``held_at``. Safe
    to call from several threads.
    """

    def __init__(self, speed: float, *, epoch: tuple[float, float] | None = None,
                 clock_file: str | None = None, held_at: float = 0.0) -> None:
        if (epoch is None) == (clock_file is None):
            raise ValueError("a simulated clock needs an epoch or a clock file, not both")
        self.speed = speed
        self.clock_file = clock_file
        self.held_at = held_at
        self._epoch = epoch
        self._checked = -math.inf
        self._error: str | None = None
        self._lock = threading.Lock()

    def epoch(self) -> tuple[float, float] | None:
        """(simulated, wall) the clock runs from, or None while it is held."""
        if self._epoch is not None or self.clock_file is None:
            return self._epoch
        with self._lock:
            now = time.monotonic()
            if self._epoch is None and now - self._checked >= POLL_S:
                self._checked = now
                try:
                    self._epoch = read_clock_file(self.clock_file)
                except ClockFileError as exc:
                    if str(exc) != self._error:     # once per distinct problem
                        self._error = str(exc)
                        log.error("%s; the simulated clock stays held", exc)
                if self._epoch is not None:
                    log.info("simulated clock: %.3f at wall %.3f, %g times the wall clock",
                             self._epoch[0], self._epoch[1], self.speed)
            return self._epoch

    def at(self, t: float) -> float:
        """Wall-clock ``t`` (unix s) on this clock."""
        epoch = self.epoch()
        if epoch is None:
            return self.held_at
        simulated, wall = epoch
        return simulated + (t - wall) * self.speed

    def now(self) -> float:
        """The clock's time now."""
        return self.at(time.time())

"""Logging what remote input triggers: sanitised text, rate-limited and aggregated lines.

Anything a sender controls can reach a log line: a node's console text (serial
LOG records), a device id or a counter, a JSON field of a packet forwarder, an
error a Modbus device answers with. Two rules keep the log readable and its size
bounded whatever a sender does; the counters (``gateway.status.Counters``) still
count every event exactly.

1. ``clean(text)``: text from input never carries a line break, an escape
   sequence or any other control character into a line. They are written as
   ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028``..., and long text is cut, so a
   node cannot forge a log line or move a terminal's cursor.
2. ``EventLog``: remote-triggered events are logged at most ``burst`` times per
   ``period_s`` per key. Keys come from a small fixed set (a reason and a
   source name, never a value taken from input), so the table of keys cannot
   be grown from outside; it is also bounded (``max_keys``). Further events of
   the period are held: the first one's text is kept and the rest counted, and
   when the period ends one line says how many there were::

       concentrator: frame from unknown device 7a1c22e0 (fcnt 12) and 8,412 more
       like it in the last 60 s

   ``flush()`` writes the summaries of periods that have ended; a source calls
   it from its loop, so a flood that stops still gets its last line.

``RateLimit`` is the plain form for a caller that writes its own lines: at
most one event per key per ``period_s``, the others only counted
(``suppressed``), the table of keys bounded (``max_keys``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

DEFAULT_LIMIT = 200           # characters of input text kept in one line

# C0 and C1 controls, DEL, Unicode line/paragraph separators and the bidirectional
# overrides that can make a line read differently from what it holds.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one printable line: controls escaped, cut after ``limit`` characters.

    Bytes are decoded as UTF-8 with replacement characters; anything else goes
    through ``str()``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = str(value)
    if len(text) > limit:
        extra = len(text) - limit
        text = _UNSAFE.sub(_escape, text[:limit]) + f"... ({extra:,} more characters)"
        return text
    return _UNSAFE.sub(_escape, text)


class _Window:
    """One key's current period: lines written, the first held text and how many more."""

    __slots__ = ("held", "more", "opened", "written")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.written = 0
        self.held: str | None = None
        self.more = 0


class EventLog:
    """Lines about remote-triggered events: at most ``burst`` per key and period, the rest
    summarised in one line at the end of the period. Safe to use from several threads."""

    def __init__(self, logger: logging.Logger, *, period_s: float = 60.0, burst: int = 1,
                 max_keys: int = 256, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if period_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("EventLog needs period_s > 0, burst >= 1 and max_keys >= 1")
        self.logger = logger
        self.period_s = period_s
        self.burst = burst
        self.max_keys = max_keys
        self.level = level
        self.clock = clock
        self.written = 0          # lines written (events and summaries)
        self.held = 0             # events that did not get a line of their own
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self._lock = threading.Lock()
        self._next_due = float("inf")

    def event(self, key: Hashable, text: str | Callable[[], str],
              now: float | None = None) -> bool:
        """One event under ``key``; ``text`` is its line (input parts already in it are
        cleaned again here), or a function that makes it, called only when the line is
        written or kept for a summary. True when the line was written now, False when
        held."""
        if now is None:
            now = self.clock()
        out: list[str] = []
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.opened >= self.period_s:
                self._close(window, now, out)
                del self._windows[key]
                window = None if not out else self._open(key, now, written=self.burst)
            if window is None:
                window = self._open(key, now)
            if window.written < self.burst:
                window.written += 1
                out.append(text() if callable(text) else text)
                logged = True
            else:
                if window.held is None:
                    window.held = text() if callable(text) else text
                else:
                    window.more += 1
                self.held += 1
                logged = False
        self._write(out)
        return logged

    def _open(self, key: Hashable, now: float, written: int = 0) -> _Window:
        window = _Window(now)
        window.written = written
        self._windows[key] = window
        self._next_due = min(self._next_due, now + self.period_s)
        while len(self._windows) > self.max_keys:
            _, oldest = self._windows.popitem(last=False)
            self._close(oldest, now, [])        # its summary is dropped, its counts stay
        return window

    def _close(self, window: _Window, now: float, out: list[str]) -> None:
        if window.held is None:
            return
        if window.more:
            seconds = max(1.0, now - window.opened)
            out.append(f"{window.held} and {window.more:,} more like it in the last "
                       f"{seconds:.0f} s")
        else:
            out.append(window.held)

    def flush(self, now: float | None = None) -> None:
        """Write the summaries of every period that has ended (cheap when none has)."""
        if now is None:
            now = self.clock()
        if now < self._next_due:
            return
        out: list[str] = []
        with self._lock:
            self._next_due = float("inf")
            for key in list(self._windows):
                window = self._windows[key]
                if now - window.opened < self.period_s:
                    self._next_due = min(self._next_due, window.opened + self.period_s)
                    continue
                before = len(out)
                self._close(window, now, out)
                if len(out) > before:
                    # Events kept coming: the next period starts now and its events are
                    # held from the first, so a steady flood gives one line a period.
                    fresh = _Window(now)
                    fresh.written = self.burst
                    self._windows[key] = fresh
                    self._next_due = min(self._next_due, now + self.period_s)
                else:
                    del self._windows[key]
        self._write(out)

    def close(self, now: float | None = None) -> None:
        """Write every held summary, period over or not (at shutdown)."""
        if now is None:
            now = self.clock()
        out: list[str] = []
        with self._lock:
            for window in self._windows.values():
                self._close(window, now, out)
            self._windows.clear()
            self._next_due = float("inf")
        self._write(out)

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            self.written += 1
            self.logger.log(self.level, "%s", clean(line, limit=4 * DEFAULT_LIMIT))


class RateLimit:
    """At most one event per key per ``period_s`` (for log lines), bounded in size."""

    def __init__(self, period_s: float, max_keys: int = 4096) -> None:
        self.period_s = period_s
        self.max_keys = max_keys
        self._last: OrderedDict[Any, float] = OrderedDict()
        self.suppressed = 0

    def allow(self, key: Any, now: float) -> bool:
        """True if an event for ``key`` at ``now`` should be let through."""
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self.suppressed += 1
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

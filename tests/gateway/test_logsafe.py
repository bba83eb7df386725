"""gateway.logsafe: input text cannot forge a log line; remote-triggered lines are bounded."""

from __future__ import annotations

import logging

import pytest

from knute.gateway.logsafe import EventLog, RateLimit, clean


def test_clean_escapes_every_line_break_and_control() -> None:
    text = "ok\nFORGED\r\x1b[2J\x00\x7f\x85\u2028\u2029\u202etab\tend"
    out = clean(text)
    assert out == ("ok\\nFORGED\\r\\x1b[2J\\x00\\x7f\\x85\\u2028\\u2029\\u202etab\\tend")
    assert out.isprintable()
    assert clean(b"caf\xc3\xa9 \xff\n") == "caf\u00e9 \ufffd\\n"
    assert clean(12) == "12"


def test_clean_cuts_long_text_and_says_how_much() -> None:
    out = clean("a" * 1000 + "\n", limit=10)
    assert out == "aaaaaaaaaa... (991 more characters)"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Lines:
    logger = logging.getLogger("knute.test.logsafe")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Lines()
    logger.handlers[:] = [handler]
    return handler


def test_a_flood_gives_one_line_then_one_summary_a_period(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"), period_s=60.0)
    assert events.event("unknown", "unknown device 00000001", now=0.0)
    for n in range(2, 10_002):
        assert not events.event("unknown", f"unknown device {n:08x}", now=n / 1000)
    assert lines.lines == ["unknown device 00000001"]
    events.flush(now=30.0)                       # the period is not over
    assert len(lines.lines) == 1
    events.flush(now=60.0)
    assert lines.lines[1] == ("unknown device 00000002 and 9,999 more like it in the "
                              "last 60 s")
    # The flood goes on: still held, one summary per period.
    for n in range(5):
        events.event("unknown", f"unknown device {n:08x}", now=61.0 + n)
    events.flush(now=120.0)
    assert lines.lines[2] == "unknown device 00000000 and 4 more like it in the last 60 s"
    # Quiet for a period: the key is forgotten and the next event has its own line.
    events.flush(now=200.0)
    assert len(lines.lines) == 3
    assert events.event("unknown", "unknown device 0000abcd", now=300.0)
    assert lines.lines[3] == "unknown device 0000abcd"
    assert events.held == 10_005


def test_keys_are_independent_and_bursts_allowed(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"), period_s=10.0, burst=3)
    for n in range(5):
        events.event("a", f"a{n}", now=0.0)
        events.event("b", f"b{n}", now=0.0)
    assert lines.lines == ["a0", "b0", "a1", "b1", "a2", "b2"]
    events.close(now=5.0)
    assert lines.lines[6:] == ["a3 and 1 more like it in the last 5 s",
                               "b3 and 1 more like it in the last 5 s"]


def test_the_next_event_after_a_period_writes_the_summary(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"), period_s=10.0)
    events.event("k", "first", now=0.0)
    events.event("k", "second", now=1.0)
    events.event("k", "third", now=11.0)         # no flush() in between
    assert lines.lines == ["first", "second"]
    events.close(now=12.0)
    assert lines.lines == ["first", "second", "third"]


def test_the_table_of_keys_is_bounded(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"), period_s=60.0, max_keys=8)
    for n in range(1000):
        events.event(n, f"line {n}", now=0.0)
    assert len(events._windows) == 8


def test_lines_written_are_cleaned(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"))
    events.event("k", "node says \nFORGED LINE\x1b[31m", now=0.0)
    assert lines.lines == ["node says \\nFORGED LINE\\x1b[31m"]


def test_text_is_made_only_when_it_is_written_or_kept(lines: Lines) -> None:
    events = EventLog(logging.getLogger("knute.test.logsafe"))
    made: list[int] = []

    def text(n: int) -> str:
        made.append(n)
        return f"event {n}"

    for n in range(100):
        events.event("k", lambda n=n: text(n), now=0.0)      # type: ignore[misc]
    assert made == [0, 1]          # the line written, and the one kept for the summary
    events.close(now=1.0)
    assert lines.lines == ["event 0", "event 1 and 98 more like it in the last 1 s"]


def test_rate_limit() -> None:
    limit = RateLimit(3600.0, max_keys=2)
    assert limit.allow("a", 0.0)
    assert not limit.allow("a", 3599.0)
    assert limit.allow("a", 3600.0)
    assert limit.allow("b", 0.0) and limit.allow("c", 0.0)
    assert limit.allow("a", 3601.0)  # "a" was the oldest key and was dropped
    assert limit.suppressed == 1

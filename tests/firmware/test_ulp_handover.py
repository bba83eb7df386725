"""firmware.ulp_counter's hand-over: a take is moved into `last` only once the meter added it.

The water meter calls take() until it returns None and adds each result
between two calls; a poll that fails in between (a MemoryError in the hour's
state write) must leave those pulses to the next poll, not lose them.
"""

from __future__ import annotations

from firmware.ulp_counter import UlpCounter


class Counters:
    """The ULP's RTC words as the HAL reads them: (forward, reverse), 16 bits each."""

    def __init__(self) -> None:
        self.forward = 0
        self.reverse = 0

    def read(self) -> tuple[int, int]:
        return (self.forward & 0xFFFF, self.reverse & 0xFFFF)


def test_a_take_that_was_added_is_not_taken_again() -> None:
    rtc = Counters()
    counter = UlpCounter(rtc.read)
    assert counter.take(100) is None            # first boot: counting starts here
    rtc.forward = 7
    assert counter.take(200) == (199, 7, 0)
    assert counter.take(200) is None            # the same poll: the 7 were added
    rtc.forward = 9
    rtc.reverse = 1
    assert counter.take(300) == (299, 2, 1)


def test_a_take_whose_add_failed_is_taken_again_at_the_next_poll() -> None:
    rtc = Counters()
    counter = UlpCounter(rtc.read)
    counter.last = [0xFFF0, 0]                  # saved state, just below the wrap
    rtc.forward = 0xFFF0 + 20
    assert counter.take(200) == (199, 20, 0)
    # ... the poll failed before the add; the next poll comes a second later at least.
    rtc.forward += 3
    assert counter.take(201) == (200, 23, 0)
    assert counter.take(201) is None
    assert counter.last == [(0xFFF0 + 23) & 0xFFFF, 0]

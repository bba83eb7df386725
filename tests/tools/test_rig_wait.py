"""The rig's ``wait_for`` polls quickly at first and less often as a wait goes on."""

from __future__ import annotations

import pytest

from knute.tools.rig.wait import MAX_POLL_S, POLL_S, WaitTimeout, poll_pause, wait_for


def test_the_pause_grows_with_the_wait_up_to_its_bound() -> None:
    assert poll_pause(0.0, 0.0) == POLL_S
    assert poll_pause(0.2, 0.001) == POLL_S          # a short wait: every 20 ms
    assert poll_pause(1.0, 0.001) == pytest.approx(0.05)   # 5 % of the wait so far
    assert poll_pause(60.0, 0.001) == MAX_POLL_S


def test_a_poll_that_takes_long_is_followed_by_as_long_a_pause() -> None:
    # A condition that starts a process (a CLI call) runs at most half the time.
    assert poll_pause(0.1, 0.4) == 0.4
    assert poll_pause(60.0, 1.5) == 1.5


def test_wait_for_returns_the_value_and_polls_a_long_wait_less_often() -> None:
    polls = iter([0, 0, 0, "done"])
    assert wait_for(lambda: next(polls), 10, "the answer") == "done"

    count = 0

    def never() -> bool:
        nonlocal count
        count += 1
        return False

    with pytest.raises(WaitTimeout, match=r"timed out after 3 s waiting for nothing"):
        wait_for(never, 3, "nothing")
    # Every 20 ms all through would be 150 polls; growing pauses make about 60.
    assert 10 < count < 100, count

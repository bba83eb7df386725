"""firmware/state.py on CPython: atomic files and the frame-counter reservation.

A hypothesis state machine of resets: the node takes counters, and power fails
at random moments, including halfway through the reservation write. No counter
may ever come out twice. (The same property is checked with kill -9 on the
unix port in test_node_state.py.)
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import state
from tests.budget import examples


class PowerCut(Exception):
    """Raised inside a state write: the rename never happens."""


# Block sizes 1-8 against runs cut or not inside the write: 60 fixed examples
# give every block size several cut runs. Nightly: 1,000.
@settings(max_examples=examples(ci=60, nightly=1000))
@given(st.integers(1, 8),
       st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=12))
def test_no_counter_is_used_twice_across_power_cuts(block: int,
                                                    runs: list[tuple[int, bool]]) -> None:
    used: list[int] = []
    with tempfile.TemporaryDirectory() as root:
        for takes, cut_in_write in runs:
            cut = {"armed": False}

            def pause(name: str, cut: dict[str, bool] = cut) -> None:
                if cut["armed"] and name == "fcnt":
                    raise PowerCut

            store = state.Store(os.path.join(root, "state"), pause=pause)
            counter = state.FrameCounter(store, block)
            assert counter.next >= (used[-1] + 1 if used else 0)
            try:
                for n in range(takes):
                    # The last take of a run may be cut inside its reservation write.
                    cut["armed"] = cut_in_write and n == takes - 1
                    fcnt = counter.take()
                    assert fcnt is not None
                    used.append(fcnt)
            except PowerCut:
                assert os.path.exists(os.path.join(root, "state", "fcnt.tmp"))
    assert len(used) == len(set(used))
    assert used == sorted(used)


def test_interrupted_write_keeps_the_previous_value() -> None:
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "state")
        state.Store(path).put("meter", {"index_ml": 5000})

        def cut(name: str) -> None:
            raise PowerCut

        with pytest.raises(PowerCut):
            state.Store(path, pause=cut).put("meter", {"index_ml": 9000})
        again = state.Store(path)
        assert again.recovered == ["meter"]
        assert again.get("meter") == {"index_ml": 5000}
        assert os.listdir(path) == ["meter.json"]


def test_writes_are_counted_per_day() -> None:
    clock = {"t": 86400 * 100 + 5}
    with tempfile.TemporaryDirectory() as root:
        store = state.Store(os.path.join(root, "state"), clock=lambda: clock["t"])
        for _ in range(3):
            store.put("a", 1)
        clock["t"] += 86400
        store.put("a", 2)
        assert (store.writes_yesterday, store.writes_today, store.writes_total) == (3, 1, 4)


def test_exhaustion() -> None:
    with tempfile.TemporaryDirectory() as root:
        store = state.Store(os.path.join(root, "state"))
        store.put("fcnt", {"next": state.MAX_FCNT})
        counter = state.FrameCounter(store, 16)
        assert counter.take() == state.MAX_FCNT
        assert counter.exhausted() and counter.take() is None and counter.peek() is None

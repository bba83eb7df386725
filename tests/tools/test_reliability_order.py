"""The reliability backend's order checks, fed messages by hand (no broker).

The gateway promises frame-counter order per device through each broker; across
a broker switch a backend subscribed to each broker has no order to go by (a
reading the old broker acknowledged may reach it after newer ones through the
next), so that is counted, not failed.
"""

from __future__ import annotations

import json

from knute.tools.bench.reliability.harness import Backend
from knute.tools.rig.subscriber import Message


def _reading(device: str, fcnt: int) -> Message:
    doc = {"id": f"{device}-{fcnt}", "device": device, "fcnt": fcnt}
    return Message(f"t/water/{device}/up", json.dumps(doc).encode(), False, 1)


def _feed(backend: Backend, *steps: tuple[int, int]) -> None:
    for fcnt, via in steps:
        backend._on_message(_reading("21000001", fcnt), via=via)


def test_order_through_one_broker_passes() -> None:
    backend = Backend("127.0.0.1", 1, more=[("127.0.0.1", 2)])
    # a resend after a reconnect: a duplicate after newer readings, first copies in order
    _feed(backend, (1, 0), (2, 0), (3, 0), (2, 0), (3, 0), (4, 0))
    assert backend.out_of_order() == []
    assert backend.reordered_across_brokers() == []
    assert backend.duplicates() == 2


def test_a_reading_late_through_the_same_broker_is_a_problem() -> None:
    backend = Backend("127.0.0.1", 1)
    _feed(backend, (1, 0), (3, 0), (2, 0))
    assert backend.out_of_order() == ["21000001: fcnt 2 after 3 via broker 0"]


def test_a_reading_late_through_the_old_broker_is_counted_not_failed() -> None:
    backend = Backend("127.0.0.1", 1, more=[("127.0.0.1", 2)])
    # b acknowledged 11 and 12, the gateway failed back to a, and a's 13 and 14
    # reached the backend before b delivered 11 and 12
    _feed(backend, (10, 1), (13, 0), (14, 0), (11, 1), (12, 1))
    assert backend.out_of_order() == []
    assert backend.reordered_across_brokers() == ["21000001: fcnt 11 via broker 1 "
                                                  "after 14 via broker 0"]
    assert backend.delivered() == 5


def test_a_first_copy_through_one_broker_is_checked_even_when_another_brought_it_first(
) -> None:
    backend = Backend("127.0.0.1", 1, more=[("127.0.0.1", 2)])
    # 5 and 6 came first through b; a's own copies of them arrive swapped
    _feed(backend, (5, 1), (6, 1), (6, 0), (5, 0))
    assert backend.out_of_order() == ["21000001: fcnt 5 after 6 via broker 0"]

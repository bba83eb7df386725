"""gateway.delivery without a broker: the delivery window and the loss tracker.

The state machine plays a broker that answers PUBACKs in any order, with
success, a refusal or a "not now", and a spool that offers rows in batches;
after every step each offered row is in exactly one place, nothing is lost,
nothing is acknowledged twice and rows go out in the order they were offered.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from knute.gateway.delivery import DeliveryWindow, LossTracker, publish_packet_size
from knute.gateway.model import Row
from tests.budget import examples


def row(row_id: int, payload: bytes = b"{}", topic: str = "k/water_meter/00000001/up") -> Row:
    """A spooled row with the given id."""
    return Row(row_id, 1, row_id, "water_meter", topic, payload, False, 0.0)


def send_due(window: DeliveryWindow, first_mid: int, now: float = 0.0) -> list[int]:
    """Send every due row with consecutive packet ids; the ids used."""
    mids = []
    for i, r in enumerate(window.due()):
        window.sent(r, first_mid + i, now)
        mids.append(first_mid + i)
    return mids


def test_window_sends_in_order_up_to_its_limit() -> None:
    window = DeliveryWindow(3, ack_timeout_s=10.0, now=0.0)
    window.offer([row(1), row(2), row(5), row(9)])
    assert [r.row_id for r in window.due()] == [1, 2, 5]
    assert send_due(window, 100) == [100, 101, 102]
    assert window.due() == [] and window.in_flight == 3 and window.queued == 1
    assert window.on_puback(101, now=1.0) == row(2)
    assert [r.row_id for r in window.due()] == [9]
    assert window.take_acked() == [2] and window.take_acked() == []
    assert window.oldest_in_flight() == row(1)
    assert window.cursor == 9


def test_refusal_and_retry_are_kept_apart_from_acks() -> None:
    window = DeliveryWindow(4, ack_timeout_s=10.0, now=0.0)
    window.offer([row(1), row(2), row(3)])
    send_due(window, 1)
    window.on_puback(1, refused="too large", now=0.1)
    window.on_puback(2, retry=True, now=0.1)
    window.on_puback(3, now=0.1)
    assert window.on_puback(3, now=0.2) is None           # a second PUBACK is ignored
    assert [(r.row.row_id, r.reason) for r in window.take_refused()] == [(1, "too large")]
    assert [r.row_id for r in window.failed] == [2]
    assert window.take_acked() == [3] and window.newest_acked == 3 and window.idle


def test_stale_only_with_rows_in_flight_and_no_progress() -> None:
    window = DeliveryWindow(2, ack_timeout_s=5.0, now=0.0)
    assert not window.stale(100.0)
    window.offer([row(1), row(2)])
    send_due(window, 1, now=100.0)
    assert not window.stale(104.0) and window.stale(105.5)
    window.on_puback(1, now=105.0)                         # progress restarts the clock
    assert not window.stale(109.0) and window.stale(110.5)
    window.on_puback(2, now=111.0)
    assert not window.stale(1000.0)


def test_rows_over_the_brokers_maximum_packet_size_are_refused_unsent() -> None:
    small, big = row(1, b"x" * 10), row(2, b"x" * 5000)
    limit = publish_packet_size(small.topic, small.payload, v5=True) + 100
    window = DeliveryWindow(5, ack_timeout_s=5.0, now=0.0, max_packet=limit, v5=True)
    window.offer([small, big, row(3)])
    assert [r.row_id for r in window.due()] == [1, 3]
    (refusal,) = window.take_refused()
    assert refusal.row == big and f"maximum packet size of {limit} bytes" in refusal.reason


def test_packet_size_matches_the_mqtt_encoding() -> None:
    # fixed header 1 + remaining length; topic length 2; packet id 2; v5 properties 1
    assert publish_packet_size("a/b", b"12345", v5=False) == 1 + 1 + 2 + 3 + 2 + 5
    assert publish_packet_size("a/b", b"12345", v5=True) == 1 + 1 + 2 + 3 + 2 + 1 + 5
    assert publish_packet_size("t", b"x" * 200, v5=False) == 1 + 2 + 2 + 1 + 2 + 200


def test_window_refuses_misuse() -> None:
    window = DeliveryWindow(2, ack_timeout_s=5.0, now=0.0)
    window.offer([row(3)])
    with pytest.raises(ValueError):
        window.offer([row(3)])                              # not after the cursor
    with pytest.raises(ValueError):
        window.sent(row(4), 1, 0.0)                         # not the next row
    with pytest.raises(ValueError):
        DeliveryWindow(0, ack_timeout_s=1.0, now=0.0)


def test_loss_tracker_convicts_the_same_oldest_row_after_k_losses() -> None:
    tracker = LossTracker(3)
    assert tracker.window_limit(20) == 20
    assert tracker.connection_ended(row(7), 6, True) is None    # acks before it: count
    assert tracker.window_limit(20) == 1                        # the suspect goes alone
    assert tracker.connection_ended(None, 0, True) is None      # no CONNACK: neutral
    assert tracker.connection_ended(row(7), 0, True) is None
    refusal = tracker.connection_ended(row(7), 0, True)
    assert refusal is not None and refusal.row == row(7) and "3 times" in refusal.reason
    assert tracker.window_limit(20) == 20 and tracker.losses == 0


def test_loss_tracker_clears_a_suspect_the_broker_read_past() -> None:
    tracker = LossTracker(2)
    assert tracker.connection_ended(row(7), 0, True) is None
    assert tracker.connection_ended(row(7), 8, True) is None    # a later row was acked
    assert tracker.suspect is None
    assert tracker.connection_ended(row(7), 0, True) is None    # counting starts again
    assert tracker.connection_ended(row(9), 0, True) is None    # another suspect
    assert tracker.losses == 1 and tracker.suspect == 9
    assert tracker.connection_ended(None, 9, True) is None      # delivered: cleared
    assert tracker.suspect is None


def test_loss_tracker_does_not_count_a_connection_that_took_nothing() -> None:
    """A broker node failing over closes each connection right after CONNACK: the
    oldest row becomes the suspect (sent alone, after the status PUBACK) but is never
    convicted for it; a loss once the broker took the status counts again."""
    tracker = LossTracker(3)
    for _ in range(20):
        assert tracker.connection_ended(row(37), 0, broker_took_messages=False) is None
    assert tracker.suspect == 37 and tracker.losses == 0
    assert tracker.window_limit(20) == 1
    assert tracker.connection_ended(row(37), 0, broker_took_messages=True) is None
    assert tracker.connection_ended(row(37), 0, broker_took_messages=False) is None
    assert tracker.losses == 1                         # the flap neither counts nor clears
    assert tracker.connection_ended(row(37), 0, broker_took_messages=True) is None
    refusal = tracker.connection_ended(row(37), 0, broker_took_messages=True)
    assert refusal is not None and refusal.row == row(37) and "status" in refusal.reason
    assert tracker.suspect is None
    # Delivered on a connection after the flaps: cleared whatever the status did.
    assert tracker.connection_ended(row(40), 0, broker_took_messages=False) is None
    assert tracker.connection_ended(None, 40, broker_took_messages=False) is None
    assert tracker.suspect is None and tracker.window_limit(20) == 20


@given(st.integers(1, 5),
       st.lists(st.sampled_from(["loss", "ack", "none", "flap"]), max_size=30))
def test_loss_tracker_convicts_only_after_k_unbroken_losses(limit: int,
                                                            events: list[str]) -> None:
    tracker = LossTracker(limit)
    streak = 0
    for event in events:
        if event == "loss":
            result = tracker.connection_ended(row(5), 0, True)
            streak += 1
        elif event == "flap":            # lost before the broker acknowledged the status
            result = tracker.connection_ended(row(5), 0, False)
            assert tracker.suspect == 5
        elif event == "ack":
            result = tracker.connection_ended(row(5), 6, True)
            streak = 0
        else:
            result = tracker.connection_ended(None, 0, True)
        assert (result is not None) == (event == "loss" and streak == limit)
        if result is not None:
            streak = 0


class WindowMachine(RuleBasedStateMachine):
    """A window, a spool offering rows and a broker settling them in any order."""

    @initialize(limit=st.integers(1, 8))
    def start(self, limit: int) -> None:
        self.window = DeliveryWindow(limit, ack_timeout_s=30.0, now=0.0)
        self.next_id = 1
        self.next_mid = 1
        self.offered: list[int] = []
        self.sent_order: list[int] = []
        self.in_flight: dict[int, int] = {}       # mid -> row id, as the broker sees it
        self.acked: list[int] = []
        self.refused: list[int] = []
        self.failed: list[int] = []
        self.taken_acked: list[int] = []
        self.taken_refused: list[int] = []

    @rule(n=st.integers(0, 6), gap=st.integers(0, 3))
    def spool_offers(self, n: int, gap: int) -> None:
        rows = []
        for _ in range(n):
            self.next_id += gap + 1
            rows.append(row(self.next_id))
        self.window.offer(rows)
        self.offered.extend(r.row_id for r in rows)

    @rule(take=st.integers(0, 8))
    def forwarder_publishes(self, take: int) -> None:
        due = self.window.due()
        assert len(due) <= self.window.limit - self.window.in_flight
        for r in due[:take]:
            self.window.sent(r, self.next_mid, 0.0)
            self.in_flight[self.next_mid] = r.row_id
            self.sent_order.append(r.row_id)
            self.next_mid += 1

    @precondition(lambda self: bool(self.in_flight))
    @rule(pick=st.integers(0, 100), answer=st.sampled_from(["ok", "ok", "refused", "retry"]))
    def broker_answers(self, pick: int, answer: str) -> None:
        mids = sorted(self.in_flight)
        mid = mids[pick % len(mids)]
        row_id = self.in_flight.pop(mid)
        settled = self.window.on_puback(mid, refused="no" if answer == "refused" else None,
                                        retry=answer == "retry", now=1.0)
        assert settled is not None and settled.row_id == row_id
        {"ok": self.acked, "refused": self.refused, "retry": self.failed}[answer].append(row_id)

    @rule(mid=st.integers(0, 70000))
    def broker_answers_an_unknown_packet_id(self, mid: int) -> None:
        if mid not in self.in_flight:
            assert self.window.on_puback(mid, now=1.0) is None

    @rule()
    def forwarder_settles(self) -> None:
        self.taken_acked.extend(self.window.take_acked())
        self.taken_refused.extend(r.row.row_id for r in self.window.take_refused())

    @invariant()
    def every_row_is_in_exactly_one_place(self) -> None:
        window = self.window
        queued = [r.row_id for r in window._queue]
        flying = [r.row_id for r in window._in_flight.values()]
        acked = self.taken_acked + window._acked
        refused = self.taken_refused + [r.row.row_id for r in window._refused]
        failed = [r.row_id for r in window.failed]
        places = queued + flying + acked + refused + failed
        assert len(set(places)) == len(places), "a row is in two places"
        assert sorted(places) == sorted(self.offered), "a row was lost"
        assert sorted(acked) == sorted(self.acked), "acked is not exactly what the broker acked"
        assert sorted(refused) == sorted(self.refused)
        assert failed == self.failed

    @invariant()
    def order_of_offer_is_kept(self) -> None:
        assert self.sent_order == self.offered[:len(self.sent_order)]
        assert [r.row_id for r in self.window._queue] == self.offered[len(self.sent_order):]
        flying = [r.row_id for r in self.window._in_flight.values()]
        assert flying == sorted(flying)

    @invariant()
    def window_limit_holds(self) -> None:
        assert self.window.in_flight <= self.window.limit
        assert self.window.in_flight == len(self.in_flight)


TestWindowMachine = WindowMachine.TestCase
# A limit of 1 to 8 rows and up to 6 offered a step: 40 steps fill the window in
# most runs, and 50 fixed runs meet each pair of rules (offer, take, answer, time
# passes) several times. Nightly: 1,000.
TestWindowMachine.settings = settings(max_examples=examples(ci=50, nightly=1000),
                                      stateful_step_count=40)


def test_backoff_capped_for_a_refused_connection_stays_jittered_below_the_cap() -> None:
    import random

    from knute.gateway.link import Backoff

    backoff = Backoff(0.5, 60.0, random.Random(7))
    delays = [backoff.next_capped(2.0) for _ in range(12)]
    assert all(0.25 <= d <= 2.0 for d in delays)
    assert len(set(delays[6:])) == 6                      # jittered, not lock-step
    uncapped = Backoff(0.5, 60.0, random.Random(7))
    assert max(uncapped.next() for _ in range(12)) > 2.0

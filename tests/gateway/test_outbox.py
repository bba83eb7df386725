"""The spooled outbox: rows the gateway makes itself reach the spool once, in order,
and survive a failed commit (gateway/conditions.py SpooledOutbox)."""

from __future__ import annotations

import threading

from knute.gateway.conditions import SpooledOutbox
from knute.gateway.downlink_status import StatusOutbox
from knute.gateway.model import Accepted


def _row(n: int) -> Accepted:
    return Accepted(device_id=n, fcnt=0, kind="water_meter", topic=f"t/{n}", payload=b"{}",
                    alarm=False, received_at=0.0)


class _Batch:
    """A batcher whose ``add`` fails on the rows named in ``fail_on`` (once each)."""

    def __init__(self, fail_on: set[int]) -> None:
        self.rows: list[Accepted] = []
        self.fail_on = fail_on

    def add(self, row: Accepted) -> None:
        if row.device_id in self.fail_on:
            self.fail_on.discard(row.device_id)
            raise OSError("disk full")
        self.rows.append(row)


def test_rows_are_handed_over_in_order_and_committed_once() -> None:
    box = SpooledOutbox(retry_s=60.0)
    box._todo.extend(_row(n) for n in (1, 2, 3))
    batch = _Batch(set())
    box.hand_over(batch.add, lambda exc: box.requeue())
    assert [r.device_id for r in batch.rows] == [1, 2, 3]
    assert [box.committed(r) for r in batch.rows] == [True, True, True]
    assert not box.committed(batch.rows[0])          # forgotten once committed
    box.hand_over(batch.add, lambda exc: box.requeue())
    assert len(batch.rows) == 3                       # nothing handed over twice


def test_a_failed_add_puts_the_uncommitted_rows_back_first_and_waits_for_the_retry() -> None:
    box = SpooledOutbox(retry_s=60.0)
    box._todo.extend(_row(n) for n in (1, 2, 3))
    failures: list[Exception] = []

    def failed(exc: Exception) -> None:
        failures.append(exc)
        box.requeue()

    first = _Batch({2})
    box.hand_over(first.add, failed)
    assert [r.device_id for r in first.rows] == [1] and len(failures) == 1
    # Row 1 went into a batch that was never committed; all three wait, in order.
    second = _Batch(set())
    box.hand_over(second.add, failed)
    assert second.rows == []                          # the retry is not due yet
    box.hand_over(second.add, failed, final=True)     # a final flush does not wait
    assert [r.device_id for r in second.rows] == [1, 2, 3]


def test_status_messages_put_on_other_threads_are_spooled_in_their_order() -> None:
    box = StatusOutbox("t", "gw-1")

    def put_five() -> None:
        for n in range(1, 6):
            box.put_doc("water_meter", n, {"n": n})

    worker = threading.Thread(target=put_five)
    worker.start()
    worker.join()
    assert box.waiting() == 5
    batch = _Batch(set())
    box.hand_over(batch.add, lambda exc: box.requeue())
    assert [r.device_id for r in batch.rows] == [1, 2, 3, 4, 5]
    assert all(r.topic.startswith("t/water_meter/") for r in batch.rows)
    for row in batch.rows:
        assert box.committed(row)
    assert box.waiting() == 0


def test_a_failed_commit_puts_its_rows_before_the_ones_made_since() -> None:
    box = SpooledOutbox(retry_s=0.0)
    box._todo.extend(_row(n) for n in (1, 2))
    first = _Batch(set())
    box.hand_over(first.add, lambda exc: box.requeue())
    box._todo.append(_row(3))                         # made while the batch was open
    box.requeue()                                     # the batch's commit failed
    second = _Batch(set())
    box.hand_over(second.add, lambda exc: box.requeue())
    assert [r.device_id for r in second.rows] == [1, 2, 3]

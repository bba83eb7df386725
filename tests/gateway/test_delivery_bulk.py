"""DeliveryWindow.on_pubacks (plain PUBACKs in bulk) settles rows as on_puback does, one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from knute.gateway.delivery import DeliveryWindow
from knute.gateway.model import Row


def row(row_id: int) -> Row:
    return Row(row_id, 1, row_id, "water_meter", "t", b"{}", False, 0.0)


def window_with(sent: int) -> DeliveryWindow:
    window = DeliveryWindow(100, ack_timeout_s=10.0, now=0.0)
    window.offer([row(i) for i in range(1, sent + 1)])
    for i, due in enumerate(window.due()):
        window.sent(due, 1000 + i, 0.0)
    return window


@given(st.integers(1, 40), st.lists(st.integers(990, 1050), max_size=60))
def test_bulk_pubacks_settle_like_one_by_one(sent: int, mids: list[int]) -> None:
    one, bulk = window_with(sent), window_with(sent)
    for mid in mids:
        one.on_puback(mid, now=5.0)
    bulk.on_pubacks(mids, 5.0)
    assert bulk.take_acked() == one.take_acked()
    assert (bulk.in_flight, bulk.newest_acked) == (one.in_flight, one.newest_acked)
    assert bulk.stale(14.0) == one.stale(14.0)
    assert bulk.stale(16.0) == one.stale(16.0)


def test_unknown_ids_are_no_progress() -> None:
    window = window_with(3)
    window.on_pubacks([7, 8], 9.0)
    assert window.take_acked() == [] and window.in_flight == 3
    assert window.stale(10.5)                        # no PUBACK of a row since 0.0
    window.on_pubacks([1001, 1000], 11.0)
    assert window.take_acked() == [2, 1] and window.newest_acked == 2
    assert not window.stale(20.0)

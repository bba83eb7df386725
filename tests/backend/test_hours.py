"""The hourly series: merged by timestamp, gaps from index differences, no litre twice."""

from __future__ import annotations

import itertools

from knute.backend.hours import (
    ESTIMATED,
    INDEX,
    MEASURED,
    Hour,
    MeterReading,
    Slot,
    meter_reading,
    rebuild,
)
from tests.backend.factory import HOUR_S, T0, reading


def mr(id_: str, received: float, index: float | None, first: int,
       litres: list[float]) -> MeterReading:
    return MeterReading(id_, received, index,
                        tuple(Slot(first + i * HOUR_S, v) for i, v in enumerate(litres)))


def total(hours: dict[int, Hour]) -> float:
    return sum(h.litres for h in hours.values())


def test_overlapping_profiles_merge_by_timestamp_not_by_sum() -> None:
    # A: hours 0..5 (index 100 at hour 6); B: hours 3..8 (index 118 at hour 9).
    a = mr("a", T0 + 6 * HOUR_S + 1, 100, T0, [1, 2, 3, 4, 5, 6])
    b = mr("b", T0 + 9 * HOUR_S + 1, 118, T0 + 3 * HOUR_S, [4, 5, 6, 1, 1, 1])
    series = rebuild([b, a])
    assert sorted(series.hours) == [T0 + i * HOUR_S for i in range(9)]
    assert total(series.hours) == 21 + 3               # hours 3..5 once, not twice
    assert {h.quality for h in series.hours.values()} == {MEASURED}
    assert series.conflicts == 0 and series.steps == []


def test_a_one_hour_gap_is_filled_exactly_from_the_index() -> None:
    # A ends at hour 2 with index 50; B covers hours 3..4 and reads 60 at hour 5.
    # Index at B's first slot start: 60 - (2 + 3) = 55, so hour 2 used 55 - 50 = 5 L.
    a = mr("a", T0 + 2 * HOUR_S, 50, T0, [10, 10])
    b = mr("b", T0 + 5 * HOUR_S, 60, T0 + 3 * HOUR_S, [2, 3])
    hours = rebuild([a, b]).hours
    assert hours[T0 + 2 * HOUR_S] == Hour(T0 + 2 * HOUR_S, 5, INDEX)
    assert total(hours) == 20 + 5 + 5


def test_a_longer_gap_shares_the_exact_total_and_is_marked_estimated() -> None:
    # Gap of hours 2, 3, 4: index 50 at hour 2, B starts at hour 5 with 62 - 3 = 59 → 9 L.
    a = mr("a", T0 + 2 * HOUR_S, 50, T0, [1, 1])
    b = mr("b", T0 + 6 * HOUR_S, 62, T0 + 5 * HOUR_S, [3])
    hours = rebuild([a, b]).hours
    gap = [hours[T0 + h * HOUR_S] for h in (2, 3, 4)]
    assert [h.quality for h in gap] == [ESTIMATED] * 3
    assert [h.litres for h in gap] == [3, 3, 3]
    assert total(hours) == 62 - 48                     # every litre of the index, once


def test_an_index_going_backwards_fills_nothing_and_is_reported() -> None:
    # The meter was replaced under the same id: index 5000 → 20.
    a = mr("a", T0 + 2 * HOUR_S, 5000, T0, [4, 4])
    b = mr("b", T0 + 6 * HOUR_S, 20, T0 + 5 * HOUR_S, [7])
    series = rebuild([a, b])
    assert total(series.hours) == 4 + 4 + 7           # only what the profiles measured
    assert [(s.at, s.before_l, s.after_l) for s in series.steps] == [(T0 + 5 * HOUR_S, 5000,
                                                                       13)]


def test_a_counter_reset_resends_old_hours_without_counting_them_twice() -> None:
    # After a reset the node's ids start again (new epoch) and its first profile
    # repeats hours already stored: same hours, same litres, counted once.
    before = reading("00000001", 900, T0 + 6 * HOUR_S, [1, 2, 3, 4, 5, 6], 1021)
    after = reading("00000001", 1, T0 + 8 * HOUR_S, [5, 6, 7, 8], 1036, id_="00000001:e2:1")
    hours = rebuild([meter_reading(before), meter_reading(after)]).hours
    assert total(hours) == 1036 - 1000


def test_a_running_slot_anchors_the_index_at_the_start_of_its_hour() -> None:
    # A Modbus reading at 12:30: the newest slot is the running hour (8 L so far),
    # index 108 → 100 at hour 12. The next one at 15:30 says 130 with 5 L running:
    # hours 12, 13, 14 share 125 - 100 = 25 L minus nothing measured.
    a = mr("a", T0 + 12.5 * HOUR_S, 108, T0 + 11 * HOUR_S, [9, 8])
    b = mr("b", T0 + 15.5 * HOUR_S, 130, T0 + 15 * HOUR_S, [5])
    hours = rebuild([a, b]).hours
    assert hours[T0 + 11 * HOUR_S] == Hour(T0 + 11 * HOUR_S, 9, MEASURED)
    assert T0 + 15 * HOUR_S not in hours               # still running: not a value yet
    assert sum(hours[T0 + h * HOUR_S].litres for h in (12, 13, 14)) == 25


def test_the_series_does_not_depend_on_arrival_order_or_duplicates() -> None:
    docs = [reading("00000002", i, T0 + (i + 1) * 6 * HOUR_S, [i + 1] * 6, 6 * sum(
        range(1, i + 2))) for i in range(4)]
    expected = rebuild(meter_reading(d) for d in docs).hours
    for order in itertools.permutations(docs):
        assert rebuild(meter_reading(d) for d in [*order, order[0]]).hours == expected


def test_a_reading_received_long_after_its_last_slot_gives_no_anchor() -> None:
    # Received 3 h after its newest slot ended: what flowed since is unknown, so
    # the index cannot close the gap (hours 2..4 stay missing, not guessed).
    a = mr("a", T0 + 2 * HOUR_S, 50, T0, [1, 1])
    b = mr("b", T0 + 9 * HOUR_S, 70, T0 + 5 * HOUR_S, [1])
    hours = rebuild([a, b]).hours
    assert sorted(hours) == [T0, T0 + HOUR_S, T0 + 5 * HOUR_S]


def test_a_polled_meters_newest_slot_is_running_even_minutes_before_the_hour_ends() -> None:
    # A Modbus poll at 02:57 reads hour 01 (1,045 L) and hour 02 so far (993 L of
    # what will be about 1,045): within the tolerance a node's hour would count as
    # closed, but a polled meter's newest slot is the running hour (docs/mqtt.md).
    doc = reading("1000a001", 1, T0 + 3 * HOUR_S, [1045, 993], 10_000,
                  received_delay_s=-180)
    doc["source"] = "modbus"
    polled = meter_reading(doc)
    assert [s.running for s in polled.slots] == [False, True]
    hours = rebuild([polled]).hours
    assert hours == {T0 + HOUR_S: Hour(T0 + HOUR_S, 1045, MEASURED)}
    # The same reading from a node (it sends right after closing its hour): both closed.
    doc["source"] = "radio"
    assert set(rebuild([meter_reading(doc)]).hours) == {T0 + HOUR_S, T0 + 2 * HOUR_S}

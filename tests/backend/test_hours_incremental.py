"""Property: the series kept reading by reading equals the full rebuild, in any arrival order.

The store no longer rebuilds a meter from all its readings on each new one: it
merges the new reading's slots and anchors and refills only the span between
the anchors around them (``backend.hours.IncrementalSeries`` is that procedure
in memory; ``tests/backend/test_store_queries.py`` runs it through both stores).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from knute.backend.hours import HOUR_S, IncrementalSeries, MeterReading, Slot, rebuild
from tests.backend.factory import T0
from tests.backend.test_hours_property import meter_history
from tests.budget import examples


def _same(readings: list[MeterReading]) -> IncrementalSeries:
    series = IncrementalSeries()
    for reading in readings:
        series.add(reading)
    full = rebuild(readings)
    assert series.hours == full.hours
    assert sorted(series.steps.values(), key=lambda s: s.at) == sorted(
        full.steps, key=lambda s: s.at)
    return series


# Arrival orders are permutations of at most a dozen readings with repeats; 100
# fixed orders include reversed, repeated and gapped histories. Nightly: 2,000.
@settings(max_examples=examples(ci=100, nightly=2000))
@given(meter_history())
def test_incremental_equals_rebuild_for_any_arrival_order(
        history: tuple[list[int], list[MeterReading]]) -> None:
    _, readings = history
    _same(readings)


# Each example draws up to 12 readings with five delay classes and conflicting
# slots; 60 fixed examples meet each delay class against each other. Nightly: 1,000.
@settings(max_examples=examples(ci=60, nightly=1000))
@given(st.data())
def test_incremental_equals_rebuild_when_readings_disagree_and_arrive_late(
        data: st.DataObject) -> None:
    # Readings with conflicting slot values, off-boundary send times (no anchor)
    # and random receive times: the winner of every hour and anchor must be the
    # one a full rebuild picks.
    n = data.draw(st.integers(1, 12))
    readings = []
    for i in range(n):
        end = data.draw(st.integers(1, 40))
        length = data.draw(st.integers(0, 8))
        delay = data.draw(st.sampled_from([0.25, 0.25, 120.0, 900.0, -1800.0]))
        index = data.draw(st.one_of(st.none(), st.integers(0, 400).map(float)))
        slots = tuple(Slot(T0 + h * HOUR_S, float(data.draw(st.integers(0, 30))))
                      for h in range(max(0, end - length), end))
        readings.append(MeterReading(f"r{i}", T0 + end * HOUR_S + delay, index, slots))
    _same(data.draw(st.permutations(readings)))


def test_a_late_reading_only_refills_the_span_between_its_anchors() -> None:
    series = IncrementalSeries()
    days = [MeterReading(f"d{k}", T0 + (k + 1) * 6 * HOUR_S + 1, float(12 * (k + 1)),
                         tuple(Slot(T0 + (k * 6 + h) * HOUR_S, 2.0) for h in range(6)))
            for k in range(6)]
    for reading in days[:2] + days[3:]:
        series.add(reading)
    # Its slots are hours 12-17; the anchors around them are at 6 (the reading
    # before) and 18 (the later reading's, which wins over its own): 12 hours
    # are filled again, not the meter's 36.
    lo, hi = series.add(days[2]) or (0, 0)
    assert (lo, hi) == (T0 + 6 * HOUR_S, T0 + 18 * HOUR_S)
    assert [h.quality for h in series.hours.values()].count("measured") == 36

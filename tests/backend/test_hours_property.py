"""Property: whatever a meter's readings go through, the series never invents a litre.

A simulated meter with known hourly use sends at hour boundaries with a profile
of its last hours, and may be replaced under the same id (its index drops to
zero); the gateway path drops, repeats and reorders the readings.
Every measured or index-filled hour must equal the true use, every run of
estimated hours must add up to the true use of those hours, and the series
must never hold more litres than the meter counted.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from knute.backend.hours import ESTIMATED, HOUR_S, MeterReading, Slot, rebuild
from tests.backend.factory import T0
from tests.budget import examples


@st.composite
def meter_history(draw: st.DrawFn) -> tuple[list[int], list[MeterReading]]:
    hours = draw(st.integers(8, 72))
    use = draw(st.lists(st.integers(0, 40), min_size=hours, max_size=hours))
    period = draw(st.integers(1, 8))
    profile = draw(st.integers(1, 12))
    # The meter may be replaced under the same id at hour `swap`: the old one had
    # counted a lifetime of water, the new one counts from zero.
    swap = draw(st.one_of(st.none(), st.integers(1, hours - 1)))
    readings = []
    for n, end in enumerate(range(period, hours + 1, period)):
        first = max(0, end - profile)
        index = (123_456 + sum(use[:end]) if swap is None or end <= swap
                 else sum(use[swap:end]))
        readings.append(MeterReading(
            f"d:{n}", T0 + end * HOUR_S + 0.25, float(index),
            tuple(Slot(T0 + h * HOUR_S, float(use[h])) for h in range(first, end))))
    kept = [r for r, keep in zip(readings, draw(st.lists(
        st.booleans(), min_size=len(readings), max_size=len(readings))), strict=True) if keep]
    repeated = kept + draw(st.lists(st.sampled_from(kept), max_size=4)) if kept else []
    return use, draw(st.permutations(repeated))


# Histories differ by period, profile length, a meter swap and what is lost or
# repeated: 100 fixed histories cover each of those with and without a swap.
# Nightly: 2,000.
@settings(max_examples=examples(ci=100, nightly=2000))
@given(meter_history())
def test_the_series_never_invents_or_doubles_a_litre(
        history: tuple[list[int], list[MeterReading]]) -> None:
    use, readings = history
    series = rebuild(readings).hours
    assert sum(h.litres for h in series.values()) <= sum(use) + 1e-9
    estimated_run: list[int] = []
    for start in [*sorted(series), None]:
        hour = series.get(start) if start is not None else None
        index = None if start is None else (start - T0) // HOUR_S
        if hour is not None and hour.quality == ESTIMATED and index is not None and (
                not estimated_run or estimated_run[-1] == index - 1):
            estimated_run.append(index)
            continue
        if estimated_run:
            got = sum(series[T0 + i * HOUR_S].litres for i in estimated_run)
            assert abs(got - sum(use[i] for i in estimated_run)) < 1e-6, estimated_run
            estimated_run = []
        if hour is None or index is None:
            continue
        if hour.quality == ESTIMATED:
            estimated_run = [index]
        else:
            assert hour.litres == use[index], (index, hour)

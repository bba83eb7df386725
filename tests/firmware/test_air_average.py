"""Trimmed means: minimum and maximum dropped before averaging, as airrohr does."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from firmware.average import TrimmedMean, div_round

samples = st.lists(st.integers(-50000, 50000), min_size=1, max_size=60)


def reference(values: list[int], div: int = 1) -> int:
    """Sort, drop one lowest and one highest (from three samples on), mean, round half up."""
    kept = sorted(values)
    if len(kept) >= 3:
        kept = kept[1:-1]
    exact = Fraction(sum(kept), len(kept) * div)
    return int((exact + Fraction(1, 2)).__floor__())


def _fill(values: list[int]) -> TrimmedMean:
    avg = TrimmedMean()
    for value in values:
        avg.add(value)
    return avg


@given(samples, st.sampled_from([1, 10, 1024]))
def test_matches_the_sorted_reference(values: list[int], div: int) -> None:
    assert _fill(values).mean(div) == reference(values, div)


@given(samples, st.randoms())
def test_order_does_not_matter(values: list[int], rnd: object) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert _fill(shuffled).mean() == _fill(values).mean()


@given(samples)
def test_mean_lies_within_the_kept_samples(values: list[int]) -> None:
    kept = sorted(values)[1:-1] if len(values) >= 3 else values
    mean = _fill(values).mean()
    assert mean is not None
    assert min(kept) <= mean <= max(kept)


@given(st.lists(st.integers(0, 1000), min_size=3, max_size=40), st.integers(1001, 10**6))
def test_one_spike_does_not_move_the_mean(values: list[int], spike: int) -> None:
    assert _fill([*values, spike]).mean() == reference([*values, max(values)])


@given(samples)
def test_reset_forgets_everything(values: list[int]) -> None:
    avg = _fill(values)
    avg.reset()
    assert avg.mean() is None
    assert avg.count == 0
    avg.add(7)
    assert avg.mean() == 7


@given(st.integers(-10**6, 10**6), st.integers(1, 5000))
def test_div_round_is_round_half_up(num: int, den: int) -> None:
    assert div_round(num, den) == (Fraction(num, den) + Fraction(1, 2)).__floor__()

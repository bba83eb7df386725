"""knute's guards on the data-rate rule (gateway/adr.py): hysteresis, bounded steps, and
a decision never leaving a node below floor + installation margin."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from knute.gateway import adr


def test_hysteresis_keeps_margin_above_the_step() -> None:
    # Margin 4 dB at SF9: the bare rule takes one step (SF8, 1.5 dB left) ...
    bare = adr.decide([1.5] * 20, 9, 14)
    assert bare is not None and bare.sf == 8
    # ... with 2 dB of hysteresis 4 - 2 = 2 dB is not a step: the node stays.
    held = adr.decide([1.5] * 20, 9, 14, hysteresis_db=2.0)
    assert held is not None and not held.changed and held.steps == 1
    # 5 dB is: SF8 with 2.5 dB left, above the hysteresis.
    moved = adr.decide([2.5] * 20, 9, 14, hysteresis_db=2.0)
    assert moved is not None and moved.sf == 8
    assert adr.margin_after_db(moved, 9, 14) == 2.5
    # Restoring margin is not delayed by it: just short of zero raises the power.
    short = adr.decide([-3.0] * 20, 9, 12, hysteresis_db=2.0)
    assert short is not None and short.power_dbm == 14


def test_steps_per_decision_are_bounded() -> None:
    assert adr.decide([10.0] * 20, 12, 14) == adr.AdrDecision(7, 12, 20.0, 6, True)
    got = adr.decide([10.0] * 20, 12, 14, max_steps=2)
    assert got == adr.AdrDecision(10, 14, 20.0, 6, True)
    # Steps that restore margin are never bounded.
    up = adr.decide([-30.0] * 20, 7, 2, max_steps=1)
    assert up is not None and (up.sf, up.power_dbm) == (12, 14)


@given(st.lists(st.floats(-30.0, 20.0), min_size=5, max_size=5), st.sampled_from(range(7, 13)),
       st.sampled_from(range(2, 15, 2)), st.floats(0.0, 6.0), st.integers(1, 6))
def test_a_decision_never_spends_margin_it_does_not_have(
        snrs: list[float], sf: int, power: int, hyst: float, steps: int) -> None:
    got = adr.decide(snrs, sf, power, history=5, hysteresis_db=hyst, max_steps=steps)
    assert got is not None
    after = adr.margin_after_db(got, sf, power)
    if got.sf < sf or got.power_dbm < power:          # margin was spent: some is left
        assert after >= min(hyst, got.margin_db) >= 0.0
    if got.margin_db < 0:                             # short: never moved further down
        assert got.sf >= sf and got.power_dbm >= power

"""The data-rate rule (gateway/adr.py): Semtech's steps, knute's limits, the SF floors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knute.gateway import adr
from knute.tools.sim.radio import SNR_FLOOR_DB


def test_floors_are_the_datasheets_and_the_planners() -> None:
    assert adr.SNR_FLOOR_DB == SNR_FLOOR_DB      # one figure for knute plan and the rule
    assert adr.margin_db(0.0, 9) == pytest.approx(2.5)      # 0 - (-12.5) - 10


def test_too_few_uplinks_say_nothing() -> None:
    assert adr.decide([5.0] * 19, 12, 14) is None
    assert adr.decide([5.0] * 20, 12, 14) is not None


def test_strong_node_gets_a_faster_sf_then_less_power() -> None:
    # SF12 heard at best +8 dB: margin 8 + 20 - 10 = 18 dB, 6 steps: SF12 -> SF7
    # takes 5, the sixth lowers the power by 2 dB.
    got = adr.decide([-3.0] * 19 + [8.0], 12, 14)
    assert got == adr.AdrDecision(sf=7, power_dbm=12, margin_db=18.0, steps=6, changed=True)


def test_the_best_snr_of_the_history_counts_not_the_last() -> None:
    old_peak = [12.0] + [-10.0] * 19          # the peak is 20 uplinks old: still in
    assert adr.decide(old_peak, 12, 14) == adr.decide([12.0] * 20, 12, 14)
    assert adr.decide([30.0, *old_peak[1:], -10.0], 12, 14) == adr.decide(
        [-10.0] * 20, 12, 14)                 # 21 uplinks: the peak dropped out


def test_node_within_the_margin_is_left_alone() -> None:
    # SF9, best -1.5 dB: margin -1.5 + 12.5 - 10 = 1 dB, no whole step.
    got = adr.decide([-1.5] * 20, 9, 14)
    assert got is not None and not got.changed and got.steps == 0


def test_weak_node_gets_power_first_then_a_slower_sf() -> None:
    # SF8 at 10 dBm, best -4 dB: margin -4 + 10 - 10 = -4 dB, -2 steps: +2 dB twice.
    assert adr.decide([-4.0] * 20, 8, 10) == adr.AdrDecision(8, 14, -4.0, -2, True)
    # Already at 14 dBm: the SF goes up instead, one per step.
    assert adr.decide([-4.0] * 20, 8, 14) == adr.AdrDecision(10, 14, -4.0, -2, True)
    # SF12 at full power has nowhere to go.
    assert adr.decide([-30.0] * 20, 12, 14) == adr.AdrDecision(12, 14, -20.0, -7, False)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="SF 6"):
        adr.decide([0.0] * 20, 6, 14)
    with pytest.raises(ValueError, match="power 20 dBm"):
        adr.decide([0.0] * 20, 9, 20)


@given(st.lists(st.floats(-30, 20), min_size=20, max_size=40), st.integers(7, 12),
       st.sampled_from([2, 4, 6, 8, 10, 12, 14]))
def test_decisions_stay_in_range_and_never_cut_below_the_margin(
        snrs: list[float], sf: int, power: int) -> None:
    got = adr.decide(snrs, sf, power)
    assert got is not None
    assert 7 <= got.sf <= 12 and 2 <= got.power_dbm <= 14
    # A faster SF is only given with at least 3 dB of margin a step to spend.
    if got.sf < sf:
        assert got.margin_db >= 3.0 * (sf - got.sf)
    # Power is only cut once the SF is as fast as it goes.
    if got.power_dbm < power:
        assert got.sf == 7

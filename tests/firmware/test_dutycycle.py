"""EU868 duty-cycle accounting (firmware/dutycycle.py), a state machine checked by hypothesis.

The module is plain Python that also runs on MicroPython; the end-to-end
deferral on the unix port is in test_radio_bridge.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware import dutycycle


@pytest.mark.parametrize("freq, band, limit", [
    (868100000, "g1", 100), (868500000, "g1", 100), (868900000, "g2", 10),
    (869525000, "g3", 1000), (867100000, "h1.4", 100), (869850000, "g4", 100),
])
def test_sub_bands(freq: int, band: str, limit: int) -> None:
    assert dutycycle.sub_band(freq, 125000) == (band, limit)


@pytest.mark.parametrize("freq", [868650000, 868550000, 869300000, 870100000, 433175000])
def test_channels_outside_a_sub_band_are_refused(freq: int) -> None:
    with pytest.raises(ValueError):
        dutycycle.sub_band(freq, 125000)


def test_time_on_air_figures() -> None:
    # FIELD-NOTES: 20 bytes take about 57 ms at SF7 and 1.32 s at SF12 (125 kHz, CR 4/5).
    assert dutycycle.time_on_air_ms(20, 7) == pytest.approx(56.6, abs=0.5)
    assert dutycycle.time_on_air_ms(20, 12) == pytest.approx(1318.9, abs=1)


@given(st.lists(st.tuples(st.integers(0, 900), st.integers(1, 4000)), min_size=1, max_size=80),
       st.sampled_from([868100000, 868900000, 869525000]))
def test_never_more_than_the_limit_in_any_hour(attempts: list[tuple[int, int]],
                                               freq: int) -> None:
    duty = dutycycle.DutyCycle(freq, 125000)
    now = 1_700_000_000
    sent: list[tuple[int, int]] = []
    deferred = 0
    for gap, toa in attempts:
        now += gap
        wait = duty.wait_s(now, toa)
        if wait:
            deferred += 1
            # Waiting as told makes a frame that fits the budget go at once.
            if toa <= duty.budget_ms:
                assert duty.wait_s(now + wait, toa) == 0 or len(sent) >= 24
            continue
        duty.record(now, toa)
        sent.append((now, toa))
    for end, _ in sent:
        used = sum(t for s, t in sent if end - 3600 < s <= end)
        assert used <= duty.budget_ms
    assert duty.sent == len(sent)
    assert len(sent) + deferred == len(attempts)

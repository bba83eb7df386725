"""Channel hopping and the per-sub-band duty cycle (firmware/dutycycle.py).

Plain Python that also runs on MicroPython; the process-level checks (a meter
hopping over the plan, a district after a power cut) are in test_radio_hop.py.
"""

from __future__ import annotations

import random

from firmware import config, dutycycle

PLAN = list(config.EU868_CHANNELS)
G1 = [868100000, 868300000, 868500000]


def _plan(channels: list[int], seed: int = 1) -> dutycycle.DutyCycle:
    rng = random.Random(seed)
    return dutycycle.DutyCycle(channels, 125000, lambda n: rng.randrange(n))


def _send(duty: dutycycle.DutyCycle, now: int, toa_ms: int) -> int:
    """What firmware.context does: ask, and on 0 record on the channel drawn."""
    wait: int = duty.wait_s(now, toa_ms)
    if wait == 0:
        duty.record(now, toa_ms)
    return wait


def test_default_plan_is_the_eight_concentrator_channels_in_two_sub_bands() -> None:
    assert [867100000 + 200000 * i for i in range(5)] + G1 == PLAN
    duty = _plan(PLAN)
    assert {dutycycle.sub_band(f, 125000) for f in PLAN} == {("h1.4", 100), ("g1", 100)}
    assert duty.freq_hz == PLAN[0] and duty.budget_ms == 36000


def test_sends_spread_over_every_channel() -> None:
    duty = _plan(PLAN)
    used = []
    for t in range(800):
        assert _send(duty, t * 600, 200) == 0
        used.append(duty.freq_hz)
        assert dutycycle.sub_band(duty.freq_hz, 125000)[0] == duty.band
    counts = {f: used.count(f) for f in PLAN}
    assert min(counts.values()) > 800 / 8 * 0.7, counts


def test_each_sub_band_keeps_its_own_budget() -> None:
    # 1 % of an hour is 36 s per sub-band: 3 s frames back to back fill g1 and
    # h1.4 with 12 each; the hop moves to the sub-band that still has room.
    duty = _plan(PLAN)
    sent = {"g1": 0, "h1.4": 0}
    t = 0
    while _send(duty, t, 3000) == 0:
        sent[duty.band] += 1
        for band in range(2):
            assert duty.used_ms(t, band) <= 36000
        t += 3
    assert sent == {"g1": 12, "h1.4": 12}
    # The first frame leaves the window an hour after it ended.
    assert duty.wait_s(t, 3000) == 3600 - t
    assert duty.used_ms(t) == 36000


def test_a_full_sub_band_is_skipped_not_waited_for() -> None:
    duty = _plan([*G1, 867100000])
    for _ in range(12):                 # g1's hour used up at t=0
        duty._cur = 0                   # sub-band g1 (868.1 MHz is the first channel)
        duty.record(0, 3000)
    assert duty.used_ms(0) == 36000
    for t in range(1, 11):
        assert _send(duty, t, 500) == 0
        assert duty.freq_hz == 867100000 and duty.band == "h1.4"


def test_full_plan_defers_with_the_nearest_sub_band() -> None:
    duty = _plan([868100000, 868900000])     # g1 (1 %) and g2 (0.1 %: 3.6 s an hour)
    assert _send(duty, 0, 3000) == 0
    assert _send(duty, 10, 3000) == 0
    assert {duty.band} <= {"g1", "g2"}
    waits = [_send(duty, 20 + i, 3000) for i in range(12)]
    # g2 took one frame at most, g1 twelve: then the node must wait for the first to expire.
    assert waits[-1] > 0 and duty.band in ("g1", "g2")


def test_one_channel_pins_the_node() -> None:
    duty = dutycycle.DutyCycle(868900000, 125000)     # no random source needed
    assert duty.wait_s(0, 1000) == 0
    assert duty.freq_hz == 868900000 and duty.band == "g2" and duty.budget_ms == 3600

"""The ULP pulse counter (tools/ulp.py), assembled here and run on the ULP model.

Each test drives the reed, direction and tamper inputs with a pulse train in
1 ms steps, runs the program once every PERIOD_MS as the RTC timer would, and
compares the counters in RTC memory with the pulses sent: bounce at every
edge, the meter's maximum rated flow, reverse flow, tamper, the CPU taking
the counts at any instant (in the middle of a pulse too) and the 16-bit wrap.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

import pytest

from knute.tools import ulp
from tests.firmware.ulp_model import Ulp

PULSE, DIRECTION, TAMPER = 10, 11, 12          # RTC GPIO numbers (GPIO 4, 0, 2 on an ESP32)
Q4_PERIOD_MS = 115                             # 3.125 m3/h at 0.1 L a pulse
W = {name: i for i, name in enumerate(ulp.WORDS)}


class Train:
    """A reed waveform: pulses (contact closed = 0) with optional bounce at each edge."""

    def __init__(self) -> None:
        self.times: list[int] = [0]
        self.levels: list[int] = [1]
        self.pulses = 0

    def pulse(self, start_ms: int, closed_ms: int, bounce: random.Random | None = None) -> None:
        """One pulse: the contact closes at start_ms for closed_ms."""
        for edge, level in ((start_ms, 0), (start_ms + closed_ms, 1)):
            if bounce is not None:
                t = edge
                for _ in range(bounce.randint(1, 5)):   # reed bounce: < 4 ms of chatter
                    t += bounce.randint(0, 1)
                    self._set(t, level)
                    t += bounce.randint(0, 1)
                    self._set(t, 1 - level)
                self._set(t + 1, level)
            else:
                self._set(edge, level)
        self.pulses += 1

    def _set(self, t: int, level: int) -> None:
        if t < self.times[-1]:
            t = self.times[-1]
        if t == self.times[-1]:
            self.levels[-1] = level
        else:
            self.times.append(t)
            self.levels.append(level)

    def level(self, t: int) -> int:
        """The contact's level at t ms."""
        return self.levels[bisect.bisect_right(self.times, t) - 1]


def run(train: Train, end_ms: int, direction: Callable[[int], int] = lambda t: 1,
        tamper: Callable[[int], int] = lambda t: 0, phase_ms: int = 3,
        burst_limit: int = 0, take_at: list[int] | None = None,
        start: dict[str, int] | None = None) -> tuple[Ulp, list[tuple[int, int]]]:
    """Run the counter over the train; the (forward, reverse) deltas taken at take_at."""
    words, entry = ulp.assemble(PULSE, DIRECTION, TAMPER, window_s=1)
    now = [0]

    def inputs() -> int:
        t = now[0]
        return (train.level(t) << PULSE | direction(t) << DIRECTION | tamper(t) << TAMPER)

    model = Ulp(words, entry, inputs)
    model.mem[W["burst_limit"]] = burst_limit
    for name, value in (start or {}).items():
        model.mem[W[name]] = value
    taken = [model.word(W["forward"]), model.word(W["reverse"])]
    deltas = []
    takes = sorted(take_at or [])
    for t in range(phase_ms, end_ms, ulp.PERIOD_MS):
        while takes and takes[0] <= t:
            # The CPU's hand-over: the counts since its last take, modulo 2**16.
            takes.pop(0)
            fwd, rev = model.word(W["forward"]), model.word(W["reverse"])
            deltas.append(((fwd - taken[0]) & 0xFFFF, (rev - taken[1]) & 0xFFFF))
            taken = [fwd, rev]
        now[0] = t
        model.run()
    fwd, rev = model.word(W["forward"]), model.word(W["reverse"])
    deltas.append(((fwd - taken[0]) & 0xFFFF, (rev - taken[1]) & 0xFFFF))
    return model, deltas


def q4_train(count: int, bounce: random.Random | None = None) -> Train:
    train = Train()
    for i in range(count):
        train.pulse(50 + i * Q4_PERIOD_MS, Q4_PERIOD_MS // 2, bounce)
    return train


def test_the_program_assembles_to_instructions_the_model_knows() -> None:
    words, entry = ulp.assemble(PULSE, DIRECTION, TAMPER)
    assert entry == len(ulp.WORDS)
    assert len(words) < 128                     # fits with room in 8 KiB of RTC slow memory
    model = Ulp(words, entry, lambda: 1 << PULSE | 1 << DIRECTION)
    model.run()                                 # raises on any instruction it does not model
    assert model.word(W["forward"]) == 0


@pytest.mark.parametrize("bounce", [None, 7, 8])
def test_no_pulse_lost_at_the_maximum_rated_flow(bounce: int | None) -> None:
    rnd = random.Random(bounce) if bounce is not None else None
    train = q4_train(600, rnd)                  # 69 s at Q4
    model, deltas = run(train, 50 + 600 * Q4_PERIOD_MS + 200)
    assert deltas == [(600, 0)]
    assert model.word(W["tamper"]) == 0
    # samples per wake-up: the figure tools/power.py's ULP_SAMPLE_US stands for
    assert model.steps / (len(range(3, 50 + 600 * Q4_PERIOD_MS + 200, 10))) < 40


def test_a_blip_shorter_than_the_debounce_is_not_a_pulse() -> None:
    train = Train()
    for i in range(50):
        train.pulse(100 + i * 200, 8)           # 8 ms: vibration, not a pulse
    train.pulses = 0
    _model, deltas = run(train, 100 + 50 * 200 + 100, phase_ms=5)
    assert deltas == [(0, 0)]


def test_reverse_flow_is_counted_apart() -> None:
    train = q4_train(300, random.Random(3))
    reverse_from, reverse_to = 50 + 100 * Q4_PERIOD_MS - 20, 50 + 180 * Q4_PERIOD_MS - 20

    def direction(t: int) -> int:
        return 0 if reverse_from <= t < reverse_to else 1

    _model, deltas = run(train, 50 + 300 * Q4_PERIOD_MS + 100, direction=direction)
    assert deltas == [(220, 80)]


def test_tamper_is_latched_until_the_cpu_clears_it() -> None:
    train = q4_train(10)
    model, _deltas = run(train, 3000, tamper=lambda t: 1 if 1000 <= t < 1030 else 0)
    assert model.word(W["tamper"]) == 1


def test_a_wake_up_during_a_pulse_neither_loses_nor_doubles_one() -> None:
    rnd = random.Random(11)
    train = q4_train(400, random.Random(12))
    end = 50 + 400 * Q4_PERIOD_MS + 200
    # The CPU takes the counts at 60 random instants, many inside a closed contact.
    takes = sorted(rnd.randrange(0, end) for _ in range(60))
    inside = [t for t in takes if train.level(t) == 0]
    assert len(inside) > 10
    # ... starting just below the 16-bit wrap of the forward counter.
    _model, deltas = run(train, end, take_at=takes, start={"forward": 0xFFF0})
    assert sum(f for f, _r in deltas) == 400
    assert all(r == 0 for _f, r in deltas)


def test_a_burst_wakes_the_cpu_once() -> None:
    train = q4_train(60)                         # 8.7 pulses a second
    model, deltas = run(train, 50 + 60 * Q4_PERIOD_MS + 100, burst_limit=5)
    assert model.wakes == 1
    assert model.word(W["woken"]) == 1
    assert deltas == [(60, 0)]
    quiet = q4_train(3)
    model, _ = run(quiet, 2000, burst_limit=5)
    assert model.wakes == 0

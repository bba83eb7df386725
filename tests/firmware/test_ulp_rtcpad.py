"""The ULP program switches its inputs to the RTC domain before it reads them.

On an ESP32 the RTC GPIO input register shows a pad's level only when the pad
is routed to the RTC block (MUX_SEL 1, FUN_SEL 0) with its input enabled
(FUN_IE 1); the ULP model (tests/firmware/ulp_model.py) reads 0 for any other
pad, as the chip does. These tests run the meter board's wiring (pulse
RTC_GPIO9 and direction RTC_GPIO8 share RTCIO_XTAL_32K_PAD_REG, tamper
RTC_GPIO6 is PAD_DAC1) with and without the program's pad prologue, and check
the one pad table (tools/ulp.RTC_PADS) that provisioning, the program and the
model read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knute.tools import ulp
from tests.firmware.ulp_model import Ulp

PULSE, DIRECTION, TAMPER = 9, 8, 6              # meter_esp32: GPIO32, GPIO33, GPIO25
W = {name: i for i, name in enumerate(ulp.WORDS)}
PULSES = 20
PERIOD_MS = 200                                 # 100 ms closed, 100 ms open


def without_pad(text: str, rtcio: int | None) -> str:
    """The source with the prologue's writes for RTC GPIO `rtcio` (None: all) taken out."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("reg_wr") and (rtcio is None
                                                  or line.endswith(f"// RTC_GPIO{rtcio}")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def drive(text: str, tampered: bool = True) -> Ulp:
    """Run the program on PULSES forward pulses, the tamper input active half-way."""
    words, entry = ulp.assemble_source(text)
    now = [0]

    def inputs() -> int:
        t = now[0]
        reed = 0 if 50 <= t < 50 + PULSES * PERIOD_MS and (t - 50) % PERIOD_MS < 100 else 1
        tamper = 1 if tampered and t >= PULSES * PERIOD_MS // 2 else 0
        return reed << PULSE | 1 << DIRECTION | tamper << TAMPER

    model = Ulp(words, entry, inputs)
    for t in range(3, 50 + PULSES * PERIOD_MS + 300, ulp.PERIOD_MS):
        now[0] = t
        model.run()
    return model


def test_with_the_prologue_every_pulse_and_the_tamper_are_seen() -> None:
    model = drive(ulp.source(PULSE, DIRECTION, TAMPER))
    assert (model.word(W["forward"]), model.word(W["reverse"])) == (PULSES, 0)
    assert model.word(W["tamper"]) == 1
    assert all(model.pad_ready(n) == (n in (PULSE, DIRECTION, TAMPER)) for n in range(18))


def test_without_the_prologue_the_ulp_sees_no_input() -> None:
    text = without_pad(ulp.source(PULSE, DIRECTION, TAMPER), None)
    assert "reg_wr" not in text
    model = drive(text)
    # Every pad reads 0: the reed looks closed for ever (one "pulse" at the start,
    # backwards because the direction input reads 0 too), the tamper never active.
    assert model.word(W["forward"]) == 0
    assert model.word(W["reverse"]) <= 1
    assert model.word(W["tamper"]) == 0


@pytest.mark.parametrize("left_out", [PULSE, DIRECTION, TAMPER])
def test_one_pad_left_out_shows(left_out: int) -> None:
    text = without_pad(ulp.source(PULSE, DIRECTION, TAMPER), left_out)
    assert f"// RTC_GPIO{left_out}" not in text
    model = drive(text)
    counts = (model.word(W["forward"]), model.word(W["reverse"]))
    if left_out == PULSE:
        assert counts == (1, 0)                 # the reed pad reads 0: stuck closed, no edges
    elif left_out == DIRECTION:
        assert counts == (0, PULSES)            # every pulse counted backwards
    else:
        assert counts == (PULSES, 0) and model.word(W["tamper"]) == 0


def test_the_prologue_runs_once_until_the_cpu_clears_its_word() -> None:
    words, entry = ulp.assemble(PULSE, DIRECTION, TAMPER)
    model = Ulp(words, entry, lambda: 1 << PULSE | 1 << DIRECTION)
    model.run()
    first = model.steps
    assert model.word(W["pads"]) == 1
    model.run()
    assert model.steps - first < first - 10     # 18 register writes skipped
    # A boot that left the pads digital: the HAL clears the word, the next run redoes them.
    model.rtc_io.clear()
    assert not model.pad_ready(PULSE)
    model.mem[W["pads"]] = 0
    model.run()
    assert model.pad_ready(PULSE) and model.pad_ready(DIRECTION) and model.pad_ready(TAMPER)


def test_the_pad_writes_set_pull_up_and_clear_pull_down_and_hold() -> None:
    words, entry = ulp.assemble(PULSE, DIRECTION, TAMPER)
    model = Ulp(words, entry, lambda: 0)
    for n in range(18):
        model.rtc_io[(ulp.RTC_PADS[n][1] & 0xFF) >> 2] = 0xFFFFFFFF   # all set: worst case
    model.run()
    for rtcio in (PULSE, DIRECTION, TAMPER):
        _gpio, reg, mux, fun_sel, fun_ie, rue, rde, hold = ulp.RTC_PADS[rtcio]
        value = model.rtc_io[(reg & 0xFF) >> 2]
        assert rue is not None and rde is not None
        assert value >> mux & 1 and value >> fun_ie & 1 and value >> rue & 1
        assert not value >> fun_sel & 3 and not value >> rde & 1 and not value >> hold & 1


def test_one_pad_table() -> None:
    assert len(ulp.RTC_PADS) == 18 and len(ulp.RTC_GPIO) == 18
    by_reg: dict[int, list[int]] = {}
    for number, (gpio, reg, mux, fun_sel, fun_ie, rue, rde, hold) in enumerate(ulp.RTC_PADS):
        assert ulp.RTC_GPIO[gpio] == number
        assert 0x3FF4847C <= reg <= 0x3FF484B0 and reg % 4 == 0
        bits = [mux, fun_sel, fun_sel + 1, fun_ie, hold] + [b for b in (rue, rde) if b is not None]
        by_reg.setdefault(reg, []).extend(bits)
        # GPIO 34 ... 39 are the input-only pads without pull resistors
        assert (rue is None) == (gpio in (34, 35, 36, 37, 38, 39))
    for reg, bits in by_reg.items():
        assert len(bits) == len(set(bits)), f"pads of 0x{reg:x} share a bit"


def test_the_hal_clears_the_pads_word() -> None:
    hal = (Path(ulp.__file__).resolve().parents[1] / "firmware" / "hal" / "esp32.py").read_text()
    found = re.search(r"^_ULP_PADS = (\d+)", hal, re.MULTILINE)
    assert found is not None and int(found.group(1)) == W["pads"]
    assert "mem[_RTC_SLOW + 4 * _ULP_PADS] = 0" in hal


def test_reg_wr_refuses_more_than_eight_bits() -> None:
    with pytest.raises(ValueError, match="8 bits"):
        ulp.assemble_source("entry:\n    reg_wr 0x3ff4848c, 20, 10, 1\n")
    with pytest.raises(ValueError, match="RTC_IO registers only"):
        ulp.assemble_source("entry:\n    reg_wr 0x3ff48800, 1, 0, 1\n")

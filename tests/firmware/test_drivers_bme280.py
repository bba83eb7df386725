"""BME280 driver: register reads, forced mode, and integer compensation against floats.

The oracle is the data sheet's double-precision code (BME280 data sheet,
appendix 8.1), written out here independently of the driver.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware.drivers.bme280 import BME280
from firmware.drivers.regimage import RegImage
from firmware.drivers.regimage_edit import RegImageEdit
from tests.firmware.airsim import (
    EXAMPLE_ADC_P,
    EXAMPLE_ADC_T,
    EXAMPLE_CALIB,
    bme280_image,
)


def float_compensate(cal: dict[str, int], adc_t: int, adc_p: int, adc_h: int,
                     t_fine: int | None = None) -> tuple[float, float, float]:
    """(degC, Pa, %RH) by the data sheet's floating-point formulas (appendix 8.1).

    ``t_fine``, if given, replaces the one computed here for pressure and
    humidity (so their comparison with the integer code sees only the errors of
    their own formulas; the temperature comparison covers t_fine's).
    """
    var1 = (adc_t / 16384.0 - cal["t1"] / 1024.0) * cal["t2"]
    var2 = ((adc_t / 131072.0 - cal["t1"] / 8192.0) ** 2) * cal["t3"]
    if t_fine is None:
        t_fine = int(var1 + var2)             # C cast: truncation toward zero
    temp = (var1 + var2) / 5120.0

    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * cal["p6"] / 32768.0
    var2 = var2 + var1 * cal["p5"] * 2.0
    var2 = var2 / 4.0 + cal["p4"] * 65536.0
    var1 = (cal["p3"] * var1 * var1 / 524288.0 + cal["p2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * cal["p1"]
    if var1 == 0.0:
        press = 0.0
    else:
        p = 1048576.0 - adc_p
        p = (p - var2 / 4096.0) * 6250.0 / var1
        var1 = cal["p9"] * p * p / 2147483648.0
        var2 = p * cal["p8"] / 32768.0
        press = p + (var1 + var2 + cal["p7"]) / 16.0

    var_h = t_fine - 76800.0
    var_h = (adc_h - (cal["h4"] * 64.0 + cal["h5"] / 16384.0 * var_h)) * (
        cal["h2"] / 65536.0 * (1.0 + cal["h6"] / 67108864.0 * var_h
                               * (1.0 + cal["h3"] / 67108864.0 * var_h)))
    var_h = var_h * (1.0 - cal["h1"] * var_h / 524288.0)
    hum = min(max(var_h, 0.0), 100.0)
    return temp, press, hum


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def datasheet_p32(cal: dict[str, int], t_fine: int, adc_p: int) -> int:
    """Appendix 8.2 BME280_compensate_P_int32, line by line with C's 32-bit types."""
    var1 = _s32((t_fine >> 1) - 64000)
    var2 = _s32(_s32(((var1 >> 2) * (var1 >> 2)) >> 11) * cal["p6"])
    var2 = _s32(var2 + _s32((var1 * cal["p5"]) << 1))
    var2 = _s32((var2 >> 2) + (cal["p4"] << 16))
    var1 = _s32(((cal["p3"] * _s32(((var1 >> 2) * (var1 >> 2)) >> 13)) >> 3)
                + (_s32(cal["p2"] * var1) >> 1)) >> 18
    var1 = _s32(_s32((32768 + var1) * cal["p1"]) >> 15)
    if var1 == 0:
        return 0
    p = _u32(_u32(_u32(1048576 - adc_p) - (var2 >> 12)) * 3125)
    p = _u32(p << 1) // _u32(var1) if p < 0x80000000 else _u32((p // _u32(var1)) * 2)
    var1 = _s32(cal["p9"] * _s32(_u32((p >> 3) * (p >> 3)) >> 13)) >> 12
    var2 = _s32(_s32(p >> 2) * cal["p8"]) >> 13
    return _u32(_s32(p) + ((var1 + var2 + cal["p7"]) >> 4))


# BME280.cal holds dig_T1..dig_H6 in this order (data sheet table 16).
CAL_ORDER = ("t1", "t2", "t3", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9",
             "h1", "h2", "h3", "h4", "h5", "h6")


def _driver(cal: dict[str, int], adc_t: int, adc_p: int, adc_h: int) -> tuple[BME280, RegImage]:
    image = RegImage(bme280_image(cal, adc_t, adc_p, adc_h))
    bme = BME280(image)
    bme.begin()
    return bme, image


def test_calibration_is_read_from_the_registers_of_table_16() -> None:
    cal = dict(EXAMPLE_CALIB, h4=-300, h5=-7, h6=-3, h2=-20)   # negative 12-bit nibble packing
    bme, _ = _driver(cal, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000)
    assert bme.cal == tuple(cal[key] for key in CAL_ORDER)


def test_data_sheet_example_temperature_and_pressure() -> None:
    # BMP280 data sheet 3.12 example (same formulas): 25.08 degC, t_fine 128422,
    # 100653.27 Pa in double precision; the 32-bit code gives 100656 Pa.
    bme, _ = _driver(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000)
    assert bme.read()
    assert bme.temperature == 2508
    assert bme.t_fine == 128422
    assert bme.pressure == 100656
    temp, press, _ = float_compensate(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000)
    assert temp == pytest.approx(25.08, abs=0.005)
    # The data sheet's table carries t_fine unrounded (128422.2869), the code
    # truncates it to 128422: 100653.258 Pa.
    assert press == pytest.approx(100653.27, abs=0.02)


def test_forced_mode_writes_ctrl_hum_before_ctrl_meas() -> None:
    image = RegImageEdit(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000))
    writes: list[tuple[int, int]] = []
    real_write = image.writeto_mem

    def record(addr: int, reg: int, buf: Any, addrsize: int = 8) -> None:
        writes.append((reg, buf[0]))
        real_write(addr, reg, buf)

    image.writeto_mem = record
    bme = BME280(image, osrs_t=2, osrs_p=1, osrs_h=1)
    bme.begin()
    wait = bme.start()
    # config 0 at begin; then ctrl_hum osrs_h=1, ctrl_meas osrs_t=2 osrs_p=1 mode forced
    assert writes == [(0xF5, 0x00), (0xF2, 0x01), (0xF4, (2 << 5) | (1 << 2) | 0x01)]
    # 9.1: 1.25 + 2.3*2 + 2.3*1 + 0.575 + 2.3*1 + 0.575 = 11.6 ms -> 12
    assert wait == 12
    assert BME280(image).measure_ms() == 10          # all x1: 9.3 ms
    assert not bme.busy()
    image.put(0x76, 0xF3, b"\x08")
    assert bme.busy()


def test_wrong_chip_missing_device_and_skipped_measurement() -> None:
    image = RegImage(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000,
                                  chip_id=0x58))
    with pytest.raises(ValueError, match="0x58"):
        BME280(image).begin()
    with pytest.raises(OSError):
        BME280(image, addr=0x77).begin()
    skipped = RegImage(bme280_image(EXAMPLE_CALIB, 0x80000, 0x80000, 0x8000))
    bme = BME280(skipped)
    bme.begin()
    assert not bme.read()
    assert bme.temperature is None
    humidity_off = RegImage(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 0x8000))
    bme = BME280(humidity_off)
    bme.begin()
    assert bme.read()
    assert bme.humidity is None
    assert bme.pressure == 100656


def test_reads_without_readfrom_mem_into() -> None:
    class PlainI2C:
        """Only readfrom_mem/writeto_mem, as the brief's minimal bus has."""

        def __init__(self, image: RegImage) -> None:
            self.image = image

        def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
            return bytes(self.image.readfrom_mem(addr, reg, n))

        def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
            self.image.writeto_mem(addr, reg, buf)

    image = RegImage(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000))
    bme = BME280(PlainI2C(image))
    bme.begin()
    assert bme.read()
    assert (bme.temperature, bme.pressure) == (2508, 100656)


# Calibrations near production values: the example's, each word moved a little.
def _near(value: int, spread: int) -> st.SearchStrategy[int]:
    return st.integers(value - spread, value + spread)


calibrations = st.fixed_dictionaries({
    "t1": _near(27504, 2000), "t2": _near(26435, 1000), "t3": _near(-1000, 200),
    "p1": _near(36477, 2000), "p2": _near(-10685, 500), "p3": _near(3024, 200),
    "p4": _near(2855, 800), "p5": _near(140, 100), "p6": _near(-7, 7),
    "p7": _near(15500, 1000), "p8": _near(-14600, 800), "p9": _near(6000, 500),
    "h1": st.integers(0, 100), "h2": _near(362, 30), "h3": st.integers(0, 30),
    "h4": _near(313, 40), "h5": _near(50, 50), "h6": _near(30, 10),
})

# Raw ADC values, without the 'measurement skipped' patterns (0x80000, 0x8000).
raw_t = st.integers(300000, 720000).filter(lambda v: v != 0x80000)
raw_p = st.integers(250000, 850000).filter(lambda v: v != 0x80000)
raw_h = st.integers(0, 65535).filter(lambda v: v != 0x8000)


# ---------------------------------------------------------------- error bounds
#
# How far may the integer code (appendix 8.2, and 4.2.3 for T and H) be from the
# double-precision formulas (8.1)? Both compute the same expressions, scaled;
# the integer code differs only where it drops bits: every ">> k" is a floor
# division by 2**k (error in [0, 1) of the result's unit) and a shift applied to
# an operand first (adc_T >> 3, var1 >> 2, p >> 3 ...) drops up to 2**k - 1 of
# its units before the product. Each bound below follows one formula step by
# step and adds up the worst case of every such truncation, scaled by how much
# the rest of the formula can magnify it, for this example's own calibration
# and values. Doubles carry ~16 significant digits: 1e-6 covers their rounding.
# Over the test's ranges (the calibrations below, -40..85 degC, 300..1100 hPa)
# the bounds reach about 0.008 degC, 10.5 Pa and 0.019 %RH (largest of 20,000
# random examples), and the actual errors come within 98 %, 61 % and 95 % of
# their example's bound. The data sheet quotes "typically 1 Pa" (1 sigma) for
# the 32-bit pressure code (8.2); its worst case is dominated by var1, the
# divisor (~P1 = 36477) kept in whole units: up to ~2.2 units, i.e. 6e-5 of the
# pressure, 6.6 Pa at 110 kPa. (A fixed 5 Pa bound failed on such a corner.)
FLOAT_SLACK = 1e-6


def temperature_error_bound(cal: dict[str, int], adc_t: int) -> float:
    """Largest |integer - float| temperature in degC (4.2.3 BME280_compensate_T_int32)."""
    t1, t2, t3 = cal["t1"], cal["t2"], cal["t3"]
    # var1 = ((adc_T >> 3) - (T1 << 1)) * T2 >> 11: adc_T >> 3 drops up to 7/8 of a
    # unit (times |T2| / 2**11), the final >> 11 up to 1 unit of t_fine.
    e_var1 = 7 / 8 * abs(t2) / 2**11 + 1
    # var2 = (((adc_T >> 4) - T1)**2 >> 12) * T3 >> 14: d = (adc_T >> 4) - T1 is
    # D - delta with D = adc_T/16 - T1, delta < 15/16, so |d*d - D*D| <= 2|D|delta
    # + delta**2; then >> 12 (1 unit), * |T3| / 2**14, and >> 14 (1 unit).
    big_d = abs(adc_t / 16 - t1)
    e_var2 = ((2 * big_d * 15 / 16 + (15 / 16) ** 2) / 2**12 + 1) * abs(t3) / 2**14 + 1
    # t_fine = var1 + var2; T = (t_fine * 5 + 128) >> 8 in 0.01 degC rounds
    # t_fine / 5120 degC to the nearest 0.01: 0.005 degC.
    return (e_var1 + e_var2) / 5120 + 0.005 + FLOAT_SLACK


def pressure_error_bound(cal: dict[str, int], t_fine: int, adc_p: int) -> float:
    """Largest |integer - float| pressure in Pa (8.2 BME280_compensate_P_int32).

    Both sides use the same ``t_fine``.
    """
    p1, p2, p3, p4, p5, p6 = (cal[k] for k in ("p1", "p2", "p3", "p4", "p5", "p6"))
    p8, p9 = cal["p8"], cal["p9"]
    # u = t_fine / 2 - 64000 (8.1's var1); v = (t_fine >> 1) - 64000 = u - d1,
    # d1 <= 1/2; a = v >> 2 = u/4 - eps, eps <= 1/8 + 3/4 = 7/8, so
    # |a*a - u*u/16| <= |u| * eps / 2 + eps**2 = e_sq.
    u = t_fine / 2 - 64000
    e_sq = abs(u) * 7 / 16 + (7 / 8) ** 2
    # var2 = ((a*a >> 11) * P6 + ((v * P5) << 1)) >> 2, + P4 << 16; the float's
    # var2 is (u*u * P6 / 32768 + 2u * P5) / 4 + P4 * 65536. a*a >> 11 is off
    # u*u/32768 by e_sq / 2**11 + 1, 2v*P5 off 2u*P5 by |P5|; >> 2 drops 1.
    e_var2 = (abs(p6) * (e_sq / 2**11 + 1) + abs(p5)) / 4 + 1
    # x = 1048576 - adc_P - (var2 >> 12) against X = 1048576 - adc_P - var2/4096.
    e_x = e_var2 / 2**12 + 1
    big_x = 1048576 - adc_p - ((u * u * p6 / 32768 + 2 * u * p5) / 4 + p4 * 65536) / 4096
    # var1 = ((P3 * (a*a >> 13)) >> 3) + ((P2 * v) >> 1) >> 18 against
    # (P3 * u*u / 524288 + P2 * u) / 524288 (the same, over 2**18):
    # a*a >> 13 is off u*u/131072 by e_sq / 2**13 + 1, times |P3| / 8, + 1 for
    # the >> 3; P2 * v / 2 is off P2 * u / 2 by |P2| / 4, + 1 for the >> 1;
    # then / 2**18 and the >> 18 drops up to 1.
    e_w = (abs(p3) * (e_sq / 2**13 + 1) / 8 + 1 + abs(p2) / 4 + 1) / 2**18 + 1
    # var1 = ((32768 + var1) * P1) >> 15 against V = (1 + var1 / 32768) * P1: the
    # error above times P1 / 32768, + 1. This divisor of p is kept in whole
    # units of about P1: the largest term of all.
    e_div = e_w * p1 / 2**15 + 1
    big_v = (1 + (p3 * u * u / 524288 + p2 * u) / 524288 / 32768) * p1
    # p = x * 6250 / var1 against Q = X * 6250 / V: the error of x over the
    # divisor, plus Q times the relative error of the divisor; the division
    # truncates (1 unit; 2 where x * 3125 >= 2**31 divides first and doubles).
    big_q = big_x * 6250 / big_v
    divided = 1 if (big_x + e_x) * 3125 < 2**31 else 2
    e_p = (6250 * e_x + big_q * e_div) / (big_v - e_div) + divided
    # P = p + (P9 * p*p / 2**31 + P8 * p / 32768 + P7) / 16: its slope, at most
    # 1 + (2 |P9| p / 2**31 + |P8| / 32768) / 16, applies to e_p;
    q = big_q + e_p
    slope = 1 + (2 * abs(p9) * q / 2**31 + abs(p8) / 32768) / 16
    # and its own truncations: b = p >> 3 drops < 7/8, so |b*b - p*p/64| <=
    # 7p/32 + 1; >> 13 (1), * |P9| >> 12 (1); (p >> 2) drops < 3/4, * |P8| >> 13
    # (1); the sum >> 4 drops 1 Pa.
    e_corr = ((((7 * q / 32 + 1) / 2**13 + 1) * abs(p9) / 2**12 + 1)
              + (3 / 4 * abs(p8) / 2**13 + 1)) / 16 + 1
    return e_p * slope + e_corr + FLOAT_SLACK


def humidity_error_bound(cal: dict[str, int], t_fine: int, adc_h: int) -> float:
    """Largest |integer - float| humidity in %RH (4.2.3 bme280_compensate_H_int32).

    The integer code works in 2**22 units of %RH (the result >> 12 is %RH * 1024).
    """
    h1, h2, h3, h4, h5, h6 = (cal[k] for k in ("h1", "h2", "h3", "h4", "h5", "h6"))
    h = t_fine - 76800                       # exact on both sides
    # L = ((adc_H << 14) - (H4 << 20) - H5 * h + 16384) >> 15 rounds
    # F / 2 = (adc_H - H4 * 64 - H5 * h / 16384) / 2 to the nearest unit: 1/2.
    big_l = abs(adc_h - h4 * 64 - h5 * h / 16384) / 2 + 0.5
    # R = ((((h * H6 >> 10) * ((h * H3 >> 11) + 32768) >> 10) + 2097152) * H2
    # + 8192) >> 14 rounds 2**23 * gain (gain = 8.1's H2 / 65536 * (1 + ...)):
    # both inner shifts drop < 1, so their product is off by the other factor
    # (plus 1); >> 10 drops 1; times |H2| / 2**14; the rounding adds 1/2.
    f6 = abs(h * h6) / 2**10 + 1
    f3 = abs(h * h3) / 2**11 + 32768 + 1
    e_r = ((f6 + f3 + 1) / 2**10 + 1) * abs(h2) / 2**14 + 0.5
    gain23 = 2**23 * h2 / 65536 * (1 + h6 / 67108864 * h * (1 + h3 / 67108864 * h))
    # v = L * R against 2**22 * F * gain: |L| e_r + |R| / 2.
    e_v = big_l * e_r + (abs(gain23) + e_r) * 0.5
    # v -= ((((v >> 15)**2) >> 7) * H1) >> 4 against 8.1's H * (1 - H1 * H / 524288)
    # (the same term, 8 * H1 * H**2 in 2**22 units): w = v >> 15 drops < 1,
    # w*w is off by 2w + 1, >> 7 drops 1, * H1, >> 4 drops 1; and the error
    # already in v moves this term by its slope, 2 * H1 * v / 2**41 = H1 * w / 2**25.
    w = (big_l * (abs(gain23) + e_r) + e_v) / 2**15
    e_h1 = ((2 * w + 1) / 2**7 + 1) * h1 / 16 + 1
    e_v = e_v * (1 + h1 * w / 2**25) + e_h1
    # Clamping to 0..100 %RH on both sides moves no two values apart; >> 12 drops
    # up to 1/1024 %RH.
    return e_v / 2**22 + 1 / 1024 + FLOAT_SLACK


@settings(max_examples=300, deadline=None)
@given(cal=calibrations, adc_t=raw_t, adc_p=raw_p, adc_h=raw_h)
def test_integer_compensation_matches_the_floating_point_formulas(
    cal: dict[str, int], adc_t: int, adc_p: int, adc_h: int
) -> None:
    """Within the sensor's operating range the integer results agree with the floats.

    "Agree" means: no further apart than the integer code's own truncations
    allow (the bounds above, derived from appendix 8.2 and 4.2.3).
    """
    temp, press, hum = float_compensate(cal, adc_t, adc_p, adc_h)
    assume(-40.0 <= temp <= 85.0 and 30000.0 <= press <= 110000.0)
    bme, _ = _driver(cal, adc_t, adc_p, adc_h)
    assert bme.read()
    assert bme.temperature is not None
    assert bme.pressure is not None
    assert bme.humidity is not None
    # The rewritten products give bit for bit the data sheet's 32-bit code.
    assert bme.pressure == datasheet_p32(cal, bme.t_fine, adc_p)
    assert abs(bme.temperature / 100.0 - temp) <= temperature_error_bound(cal, adc_t)
    # Pressure and humidity from the integer code's t_fine: its own error is
    # the temperature's, checked above.
    _, press, hum = float_compensate(cal, adc_t, adc_p, adc_h, t_fine=bme.t_fine)
    assert abs(bme.pressure - press) <= pressure_error_bound(cal, bme.t_fine, adc_p)
    assert abs(bme.humidity / 1024.0 - hum) <= humidity_error_bound(cal, bme.t_fine, adc_h)


class Word:
    """An int that fails as soon as an arithmetic result leaves MicroPython's small ints.

    On 32-bit ports a small int has 31 bits (-2**30 .. 2**30-1); anything larger
    becomes a heap-allocated long int.
    """

    LIMIT = 1 << 30

    def __init__(self, value: int) -> None:
        if not -self.LIMIT <= value < self.LIMIT:
            raise OverflowError(value)
        self.value = value

    @staticmethod
    def _v(other: Any) -> int:
        return other.value if isinstance(other, Word) else int(other)

    def __add__(self, o: Any) -> Word: return Word(self.value + self._v(o))
    def __radd__(self, o: Any) -> Word: return Word(self._v(o) + self.value)
    def __sub__(self, o: Any) -> Word: return Word(self.value - self._v(o))
    def __rsub__(self, o: Any) -> Word: return Word(self._v(o) - self.value)
    def __mul__(self, o: Any) -> Word: return Word(self.value * self._v(o))
    def __rmul__(self, o: Any) -> Word: return Word(self._v(o) * self.value)
    def __floordiv__(self, o: Any) -> Word: return Word(self.value // self._v(o))
    def __rfloordiv__(self, o: Any) -> Word: return Word(self._v(o) // self.value)
    def __mod__(self, o: Any) -> Word: return Word(self.value % self._v(o))
    def __rmod__(self, o: Any) -> Word: return Word(self._v(o) % self.value)
    def __lshift__(self, o: Any) -> Word: return Word(self.value << self._v(o))
    def __rlshift__(self, o: Any) -> Word: return Word(self._v(o) << self.value)
    def __rshift__(self, o: Any) -> Word: return Word(self.value >> self._v(o))
    def __and__(self, o: Any) -> Word: return Word(self.value & self._v(o))
    def __or__(self, o: Any) -> Word: return Word(self.value | self._v(o))
    def __lt__(self, o: Any) -> bool: return self.value < self._v(o)
    def __le__(self, o: Any) -> bool: return self.value <= self._v(o)
    def __gt__(self, o: Any) -> bool: return self.value > self._v(o)
    def __ge__(self, o: Any) -> bool: return self.value >= self._v(o)
    def __eq__(self, o: object) -> bool: return self.value == self._v(o)
    def __hash__(self) -> int: return hash(self.value)
    def __int__(self) -> int: return self.value
    def __index__(self) -> int: return self.value


def adc_h_for(cal: dict[str, int], adc_t: int, rh: float) -> int:
    """Roughly the raw humidity that reads `rh` %RH (appendix 8.1 solved for adc_H, H1 ignored)."""
    var1 = (adc_t / 16384.0 - cal["t1"] / 1024.0) * cal["t2"]
    var2 = ((adc_t / 131072.0 - cal["t1"] / 8192.0) ** 2) * cal["t3"]
    v = int(var1 + var2) - 76800.0
    gain = cal["h2"] / 65536.0 * (1.0 + cal["h6"] / 67108864.0 * v
                                  * (1.0 + cal["h3"] / 67108864.0 * v))
    raw = cal["h4"] * 64.0 + cal["h5"] / 16384.0 * v + rh / gain
    return max(0, min(65535, round(raw)))


@settings(max_examples=300, deadline=None)
@given(cal=calibrations, adc_t=raw_t, adc_p=raw_p, rh=st.floats(0.5, 99.0))
def test_compensation_stays_in_31_bit_small_ints_for_physical_readings(
    cal: dict[str, int], adc_t: int, adc_p: int, rh: float
) -> None:
    """No intermediate passes 2**30 for -40..85 degC, 300..1100 hPa, 0..100 %RH.

    So on ESP32/RP2 a reading allocates no long ints. The same numbers go
    through the driver with plain ints and with bound-checked ones.
    """
    adc_h = adc_h_for(cal, adc_t, rh)
    temp, press, hum = float_compensate(cal, adc_t, adc_p, adc_h)
    assume(-40.0 <= temp <= 85.0 and 30000.0 <= press <= 110000.0 and 0.0 < hum < 100.0)
    assume(adc_h != 0x8000)
    plain = BME280(None)
    checked = BME280(None)
    plain.cal = tuple(cal[key] for key in CAL_ORDER)
    checked.cal = tuple(Word(cal[key]) for key in CAL_ORDER)
    plain.compensate(adc_t, adc_p, adc_h)
    checked.compensate(Word(adc_t), Word(adc_p), Word(adc_h))
    assert int(checked.temperature) == plain.temperature
    assert int(checked.pressure) == plain.pressure
    assert int(checked.humidity) == plain.humidity

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


def float_compensate(cal: dict[str, int], adc_t: int, adc_p: int,
                     adc_h: int) -> tuple[float, float, float]:
    """(degC, Pa, %RH) by the data sheet's floating-point formulas (appendix 8.1)."""
    var1 = (adc_t / 16384.0 - cal["t1"] / 1024.0) * cal["t2"]
    var2 = ((adc_t / 131072.0 - cal["t1"] / 8192.0) ** 2) * cal["t3"]
    t_fine = int(var1 + var2)                 # C cast: truncation toward zero
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


@settings(max_examples=300, deadline=None)
@given(cal=calibrations, adc_t=raw_t, adc_p=raw_p, adc_h=raw_h)
def test_integer_compensation_matches_the_floating_point_formulas(
    cal: dict[str, int], adc_t: int, adc_p: int, adc_h: int
) -> None:
    """Within the sensor's operating range the integer results agree with the floats."""
    temp, press, hum = float_compensate(cal, adc_t, adc_p, adc_h)
    assume(-40.0 <= temp <= 85.0 and 30000.0 <= press <= 110000.0)
    bme, _ = _driver(cal, adc_t, adc_p, adc_h)
    assert bme.read()
    assert bme.temperature is not None
    assert bme.pressure is not None
    assert bme.humidity is not None
    # The rewritten products give bit for bit the data sheet's 32-bit code.
    assert bme.pressure == datasheet_p32(cal, bme.t_fine, adc_p)
    # 4.2.3: 0.01 degC resolution. 8.2: "accuracy of typically 1 Pa (1-sigma)";
    # at the corners of the range the 32-bit code is a few Pa off the floats,
    # under half of the 10 Pa step the frame carries. Humidity in 1/1024 %RH.
    assert abs(bme.temperature / 100.0 - temp) <= 0.01
    assert abs(bme.pressure - press) <= 5.0
    assert abs(bme.humidity / 1024.0 - hum) <= 0.02


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

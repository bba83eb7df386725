# Bosch BME280 humidity, pressure and temperature sensor over I2C.
#
# Reference: BME280 data sheet BST-BME280-DS001 (rev. 1.23). Sections cited:
#   3.3.3  forced mode: one measurement, then back to sleep
#   4.2.2  trimming parameter readout (table 16)
#   4.2.3  integer compensation formulas (temperature, humidity)
#   8.2    pressure compensation in 32-bit fixed point (appendix A)
#   5.3-5  memory map, ctrl_hum, status, ctrl_meas
#   9.1    measurement time
#
# Compensation uses only integers. The data sheet's 32-bit code keeps every
# intermediate inside a C int32; MicroPython's small ints on 32-bit ports
# (ESP32, RP2) hold 31 bits, and anything larger becomes a heap-allocated long
# int. Where a data-sheet product can pass 2**30 for a physical reading
# (-40..85 degC, 300..1100 hPa, 0..100 %RH) it is rewritten below into an
# exactly equal sum of smaller terms, each rewrite noted at its line, so a
# reading allocates nothing and gives bit for bit the data sheet's result.
#
# Units of the results: temperature 0.01 degC, pressure Pa, humidity %RH in
# Q22.10 (value / 1024).

from struct import unpack_from

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

CHIP_ID = const(0x60)
ADDRESS = const(0x76)          # SDO to GND; 0x77 with SDO to VDDIO

_REG_CALIB0 = const(0x88)      # calib00..calib25, 0x88..0xA1 (4.2.2)
_CALIB0_LEN = const(26)
_REG_ID = const(0xD0)
_REG_CALIB1 = const(0xE1)      # calib26..calib32, 0xE1..0xE7 (4.2.2)
_CALIB1_LEN = const(7)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)        # press_msb .. hum_lsb, one burst read (section 4)
_DATA_LEN = const(8)

# Positions of the trimming parameters dig_T1..dig_H6 in BME280.cal (table 16 order)
_T1 = const(0)
_T2 = const(1)
_T3 = const(2)
_P1 = const(3)
_P2 = const(4)
_P3 = const(5)
_P4 = const(6)
_P5 = const(7)
_P6 = const(8)
_P7 = const(9)
_P8 = const(10)
_P9 = const(11)
_H1 = const(12)
_H2 = const(13)
_H3 = const(14)
_H4 = const(15)
_H5 = const(16)
_H6 = const(17)

_STATUS_MEASURING = const(0x08)
_MODE_FORCED = const(0x01)
_SKIPPED_20 = const(0x80000)   # temperature/pressure output when skipped (5.4.5)
_SKIPPED_16 = const(0x8000)    # humidity output when skipped (5.4.3)

_H_MAX = const(419430400)      # 100 %RH in the Q22.10 << 12 working value (4.2.3)


def _sq_shr(a, shift):
    # (a * a) >> shift for shift >= 7, without forming a * a: with
    # a = 128*h + l (h = a >> 7, l = a & 127), a*a = 16384*h*h + (256*h + l)*l,
    # and 16384*h*h >> shift is exact because shift <= 14.
    h = a >> 7
    low = a & 127
    return (h * h << (14 - shift)) + (((256 * h + low) * low) >> shift)


def _muldiv(x, k, v):
    # floor(x * k / v) for x >= 0, v > 0, without forming x * k:
    # x = q*v + r gives x*k/v = q*k + r*k/v, and q*k is a whole number.
    return (x // v) * k + ((x % v) * k) // v


class BME280:
    # The trimming parameters are one tuple, `cal`, in table 16's order:
    # dig_T1..T3, dig_P1..P9, dig_H1..H6 (indexes _T1.._H6 above).

    def __init__(self, i2c, addr=ADDRESS, osrs_t=1, osrs_p=1, osrs_h=1):
        self._i2c = i2c
        self.addr = addr
        # ctrl_hum (high byte) and ctrl_meas (low byte) of a forced
        # measurement (5.4.3, 5.4.5); one attribute: a 12th would double the
        # instance's attribute table on a small heap.
        self._ctrl = ((osrs_h & 0x07) << 8) | (osrs_t << 5) | (osrs_p << 2) | _MODE_FORCED
        # 9.1, t_measure,max: 1.25 + [2.3*T] + [2.3*P + 0.575] + [2.3*H + 0.575]
        # in microseconds; T, P, H the oversampling factors, 0 when skipped.
        us = 1250
        for osrs, extra in ((osrs_t, 0), (osrs_p, 575), (osrs_h, 575)):
            if osrs:
                us += 2300 * (1 << (osrs - 1)) + extra
        self._measure_ms = (us + 999) // 1000
        self._data = bytearray(_DATA_LEN)
        self._one = bytearray(1)
        self._into = hasattr(i2c, "readfrom_mem_into")
        self.cal = None
        self.t_fine = 0
        self.temperature = None    # 0.01 degC
        self.pressure = None       # Pa
        self.humidity = None       # %RH * 1024

    # --- bus helpers ---------------------------------------------------

    def _read(self, reg, buf):
        if self._into:
            self._i2c.readfrom_mem_into(self.addr, reg, buf)
        else:
            data = self._i2c.readfrom_mem(self.addr, reg, len(buf))
            for i in range(len(buf)):
                buf[i] = data[i]

    def _write(self, reg, value):
        self._one[0] = value
        self._i2c.writeto_mem(self.addr, reg, self._one)

    # --- set-up --------------------------------------------------------

    def begin(self):
        """Check the chip id and read the trimming parameters.

        Raises OSError when the bus fails, ValueError when the device at the
        address is not a BME280 (a BMP280 answers 0x58 and has no humidity).
        """
        self._read(_REG_ID, self._one)
        if self._one[0] != CHIP_ID:
            raise ValueError("chip id 0x%02x, not a BME280" % self._one[0])
        block0 = bytearray(_CALIB0_LEN)
        block1 = bytearray(_CALIB1_LEN)
        self._read(_REG_CALIB0, block0)
        self._read(_REG_CALIB1, block1)
        self.calibrate(block0, block1)
        # Filter off, no 3-wire SPI; config is writable in sleep mode (5.4.6).
        self._write(_REG_CONFIG, 0)

    def calibrate(self, block0, block1):
        """Set `cal` from registers 0x88..0xA1 and 0xE1..0xE7 (table 16)."""
        # 0x88..0x9F: dig_T1..dig_P9, little-endian words, T1 and P1 unsigned
        # (0xA0 is unused, 0xA1 is dig_H1). 0xE1..0xE7: dig_H2 (signed word),
        # dig_H3, then dig_H4 and dig_H5, 12 bits each, sharing 0xE5's nibbles
        # (0xE4 and 0xE6 are their signed high bytes), then dig_H6 (signed).
        h2, h3, e4, e5, e6, h6 = unpack_from("<hBbBbb", block1)
        # (a concatenation: MicroPython has no starred items in a tuple display)
        self.cal = unpack_from("<HhhHhhhhhhhh", block0) + (  # noqa: RUF005
            block0[25], h2, h3, (e4 << 4) | (e5 & 0x0F), (e6 << 4) | (e5 >> 4), h6)

    # --- measuring -----------------------------------------------------

    def measure_ms(self):
        """Longest time one forced measurement takes, in whole ms (9.1, t_measure,max)."""
        return self._measure_ms

    def start(self):
        """Start one forced-mode measurement (3.3.3); returns ms until it is done.

        ctrl_hum takes effect only with the following write to ctrl_meas (5.4.3).
        """
        self._write(_REG_CTRL_HUM, self._ctrl >> 8)
        self._write(_REG_CTRL_MEAS, self._ctrl & 0xFF)
        return self._measure_ms

    def busy(self):
        """True while a conversion is running (status bit 3, 5.4.4)."""
        self._read(_REG_STATUS, self._one)
        return bool(self._one[0] & _STATUS_MEASURING)

    def read(self):
        """Burst-read the data registers (section 4) and compensate them.

        Returns True and sets temperature, pressure and humidity; returns
        False (values None) when the data registers hold the 'skipped'
        pattern, i.e. no measurement has completed.
        """
        d = self._data
        self._read(_REG_DATA, d)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        if adc_t == _SKIPPED_20:
            self.temperature = self.pressure = self.humidity = None
            return False
        self.compensate(adc_t, (d[0] << 12) | (d[1] << 4) | (d[2] >> 4), (d[6] << 8) | d[7])
        return True

    def compensate(self, adc_t, adc_p, adc_h):
        """Compensate raw ADC values; sets t_fine, temperature, pressure, humidity.

        Temperature in 0.01 degC (4.2.3 BME280_compensate_T_int32), pressure
        in Pa (8.2 BME280_compensate_P_int32; 0 when it cannot be computed),
        humidity in %RH * 1024 (4.2.3 bme280_compensate_H_int32); pressure and
        humidity None when their outputs hold the 'skipped' pattern.
        """
        c = self.cal
        # --- temperature (4.2.3) ---
        t1 = c[_T1]
        var1 = ((((adc_t >> 3) - (t1 << 1))) * c[_T2]) >> 11
        d = (adc_t >> 4) - t1
        var2 = (((d * d) >> 12) * c[_T3]) >> 14
        t_fine = self.t_fine = var1 + var2
        self.temperature = (t_fine * 5 + 128) >> 8
        self.pressure = None if adc_p == _SKIPPED_20 else _pressure(c, t_fine, adc_p)
        if adc_h == _SKIPPED_16:
            self.humidity = None
            return
        # --- humidity (4.2.3) ---
        v = t_fine - 76800
        v = ((((adc_h << 14) - (c[_H4] << 20) - (c[_H5] * v)) + 16384) >> 15) * \
            (((((((v * c[_H6]) >> 10) * (((v * c[_H3]) >> 11) + 32768)) >> 10)
               + 2097152) * c[_H2] + 8192) >> 14)
        w = v >> 15
        v = v - ((((w * w) >> 7) * c[_H1]) >> 4)
        if v < 0:
            v = 0
        elif v > _H_MAX:
            v = _H_MAX
        self.humidity = v >> 12


def _pressure(c, t_fine, adc_p):
    # Pressure in Pa (8.2 BME280_compensate_P_int32); 0 when it cannot be computed.
    var1 = (t_fine >> 1) - 64000
    a = var1 >> 2
    # data sheet: ((var1>>2) * (var1>>2)) >> 11, and >> 13 below
    var2 = _sq_shr(a, 11) * c[_P6]
    var2 = var2 + ((var1 * c[_P5]) << 1)
    var2 = (var2 >> 2) + (c[_P4] << 16)
    # data sheet: (dig_P2 * var1) >> 1; var1 = 2*(var1>>1) + (var1&1)
    half = c[_P2] * (var1 >> 1) + ((c[_P2] * (var1 & 1)) >> 1)
    var1 = (((c[_P3] * _sq_shr(a, 13)) >> 3) + half) >> 18
    # data sheet: ((32768 + var1) * dig_P1) >> 15; 32768*dig_P1 >> 15 is dig_P1
    var1 = c[_P1] + ((var1 * c[_P1]) >> 15)
    if var1 <= 0:
        return 0        # the data sheet's guard against division by zero
    x = 1048576 - adc_p - (var2 >> 12)
    if x < 0:
        return 0        # would wrap the data sheet's unsigned 32-bit p
    # data sheet: p = x*3125; p < 0x80000000 ? (p<<1)/var1 : (p/var1)*2,
    # and x*3125 < 2**31 exactly when x <= 687194
    p = _muldiv(x, 6250, var1) if x <= 687194 else _muldiv(x, 3125, var1) * 2
    b = p >> 3
    var1 = (c[_P9] * ((b * b) >> 13)) >> 12
    var2 = ((p >> 2) * c[_P8]) >> 13
    return p + ((var1 + var2 + c[_P7]) >> 4)

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
_REG_RESET = const(0xE0)
_REG_CALIB1 = const(0xE1)      # calib26..calib32, 0xE1..0xE7 (4.2.2)
_CALIB1_LEN = const(7)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)        # press_msb .. hum_lsb, one burst read (section 4)
_DATA_LEN = const(8)

_RESET_WORD = const(0xB6)
_STATUS_MEASURING = const(0x08)
_MODE_FORCED = const(0x01)
_SKIPPED_20 = const(0x80000)   # temperature/pressure output when skipped (5.4.5)
_SKIPPED_16 = const(0x8000)    # humidity output when skipped (5.4.3)

_H_MAX = const(419430400)      # 100 %RH in the Q22.10 << 12 working value (4.2.3)


def _s16(lo, hi):
    value = lo | (hi << 8)
    return value - 65536 if value & 0x8000 else value


def _s8(value):
    return value - 256 if value & 0x80 else value


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
    def __init__(self, i2c, addr=ADDRESS, osrs_t=1, osrs_p=1, osrs_h=1):
        self._i2c = i2c
        self.addr = addr
        self._osrs_t = osrs_t
        self._osrs_p = osrs_p
        self._osrs_h = osrs_h
        self._data = bytearray(_DATA_LEN)
        self._one = bytearray(1)
        self._into = hasattr(i2c, "readfrom_mem_into")
        self.t1 = self.t2 = self.t3 = 0
        self.p1 = self.p2 = self.p3 = self.p4 = self.p5 = 0
        self.p6 = self.p7 = self.p8 = self.p9 = 0
        self.h1 = self.h2 = self.h3 = self.h4 = self.h5 = self.h6 = 0
        self.t_fine = 0
        self.temperature = None    # 0.01 degC
        self.pressure = None       # Pa
        self.humidity = None       # %RH * 1024
        self.adc_t = self.adc_p = self.adc_h = 0

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

    def reset(self):
        """Soft reset: the full power-on-reset procedure (5.4.2)."""
        self._write(_REG_RESET, _RESET_WORD)

    def calibrate(self, block0, block1):
        """Store the trimming parameters of registers 0x88..0xA1 and 0xE1..0xE7 (table 16)."""
        b = block0
        self.t1 = b[0] | (b[1] << 8)
        self.t2 = _s16(b[2], b[3])
        self.t3 = _s16(b[4], b[5])
        self.p1 = b[6] | (b[7] << 8)
        self.p2 = _s16(b[8], b[9])
        self.p3 = _s16(b[10], b[11])
        self.p4 = _s16(b[12], b[13])
        self.p5 = _s16(b[14], b[15])
        self.p6 = _s16(b[16], b[17])
        self.p7 = _s16(b[18], b[19])
        self.p8 = _s16(b[20], b[21])
        self.p9 = _s16(b[22], b[23])
        self.h1 = b[25]                                  # 0xA1 (0xA0 is unused)
        c = block1
        self.h2 = _s16(c[0], c[1])                       # 0xE1 / 0xE2
        self.h3 = c[2]                                   # 0xE3
        self.h4 = (_s8(c[3]) << 4) | (c[4] & 0x0F)       # 0xE4 [11:4] / 0xE5 [3:0]
        self.h5 = (_s8(c[5]) << 4) | (c[4] >> 4)         # 0xE6 [11:4] / 0xE5 [7:4]
        self.h6 = _s8(c[6])                              # 0xE7

    # --- measuring -----------------------------------------------------

    def measure_ms(self):
        """Longest time one forced measurement takes, in whole ms (9.1, t_measure,max)."""
        # 1.25 + [2.3*T] + [2.3*P + 0.575] + [2.3*H + 0.575], in microseconds;
        # T, P, H are the oversampling factors, a bracket is 0 when skipped.
        us = 1250
        if self._osrs_t:
            us += 2300 * (1 << (self._osrs_t - 1))
        if self._osrs_p:
            us += 2300 * (1 << (self._osrs_p - 1)) + 575
        if self._osrs_h:
            us += 2300 * (1 << (self._osrs_h - 1)) + 575
        return (us + 999) // 1000

    def start(self):
        """Start one forced-mode measurement (3.3.3); returns ms until it is done.

        ctrl_hum takes effect only with the following write to ctrl_meas (5.4.3).
        """
        self._write(_REG_CTRL_HUM, self._osrs_h & 0x07)
        self._write(_REG_CTRL_MEAS,
                    (self._osrs_t << 5) | (self._osrs_p << 2) | _MODE_FORCED)
        return self.measure_ms()

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
        self.adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        self.adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        self.adc_h = (d[6] << 8) | d[7]
        if self.adc_t == _SKIPPED_20:
            self.temperature = self.pressure = self.humidity = None
            return False
        self.compensate(self.adc_t, self.adc_p, self.adc_h)
        return True

    def compensate(self, adc_t, adc_p, adc_h):
        """Compensate raw ADC values; sets temperature, pressure, humidity."""
        self.temperature = self.compensate_t(adc_t)
        self.pressure = None if adc_p == _SKIPPED_20 else self.compensate_p(adc_p)
        self.humidity = None if adc_h == _SKIPPED_16 else self.compensate_h(adc_h)

    # --- compensation (data sheet 4.2.3 and 8.2) -----------------------

    def compensate_t(self, adc_t):
        """Temperature in 0.01 degC (4.2.3 BME280_compensate_T_int32); sets t_fine."""
        t1 = self.t1
        var1 = ((((adc_t >> 3) - (t1 << 1))) * self.t2) >> 11
        d = (adc_t >> 4) - t1
        var2 = (((d * d) >> 12) * self.t3) >> 14
        self.t_fine = var1 + var2
        return (self.t_fine * 5 + 128) >> 8

    def compensate_p(self, adc_p):
        """Pressure in Pa (8.2 BME280_compensate_P_int32); 0 when it cannot be computed.

        Needs t_fine from compensate_t() of the same measurement.
        """
        var1 = (self.t_fine >> 1) - 64000
        a = var1 >> 2
        # data sheet: ((var1>>2) * (var1>>2)) >> 11, and >> 13 below
        var2 = _sq_shr(a, 11) * self.p6
        var2 = var2 + ((var1 * self.p5) << 1)
        var2 = (var2 >> 2) + (self.p4 << 16)
        # data sheet: (dig_P2 * var1) >> 1; var1 = 2*(var1>>1) + (var1&1)
        half = self.p2 * (var1 >> 1) + ((self.p2 * (var1 & 1)) >> 1)
        var1 = (((self.p3 * _sq_shr(a, 13)) >> 3) + half) >> 18
        # data sheet: ((32768 + var1) * dig_P1) >> 15; 32768*dig_P1 >> 15 is dig_P1
        var1 = self.p1 + ((var1 * self.p1) >> 15)
        if var1 <= 0:
            return 0        # the data sheet's guard against division by zero
        x = 1048576 - adc_p - (var2 >> 12)
        if x < 0:
            return 0        # would wrap the data sheet's unsigned 32-bit p
        # data sheet: p = x*3125; p < 0x80000000 ? (p<<1)/var1 : (p/var1)*2,
        # and x*3125 < 2**31 exactly when x <= 687194
        p = _muldiv(x, 6250, var1) if x <= 687194 else _muldiv(x, 3125, var1) * 2
        b = p >> 3
        var1 = (self.p9 * ((b * b) >> 13)) >> 12
        var2 = ((p >> 2) * self.p8) >> 13
        return p + ((var1 + var2 + self.p7) >> 4)

    def compensate_h(self, adc_h):
        """Humidity in %RH * 1024 (4.2.3 bme280_compensate_H_int32).

        Needs t_fine from compensate_t() of the same measurement.
        """
        v = self.t_fine - 76800
        v = ((((adc_h << 14) - (self.h4 << 20) - (self.h5 * v)) + 16384) >> 15) * \
            (((((((v * self.h6) >> 10) * (((v * self.h3) >> 11) + 32768)) >> 10)
               + 2097152) * self.h2 + 8192) >> 14)
        w = v >> 15
        v = v - ((((w * w) >> 7) * self.h1) >> 4)
        if v < 0:
            v = 0
        elif v > _H_MAX:
            v = _H_MAX
        return v >> 12

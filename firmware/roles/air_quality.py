# The air-quality node: a particle sensor (SDS011 or PMS5003) on a UART and a
# BME280 on I2C, averaged over the send interval, one air_quality frame per
# interval (protocol/kinds.py: pm1, pm2_5, pm10, temperature, humidity,
# pressure, status).
#
# The particle sensor's fan wears out (the SDS011 is rated for about 8000 h),
# so it sleeps between measurements. Each interval ends with a window:
#
#   ... asleep ... | wake | warm-up (warmup_s) | sample (sample_s) | send, sleep
#
# The warm-up clock starts with the first frame after the wake command (the
# fan is really turning then); frames before the end of warm-up are read and
# discarded. A sensor that does not answer a wake command gets it again every
# few seconds. When warmup_s + sample_s is not shorter than the interval the
# fan runs all the time and warms up once, after boot.
#
# The BME280 is measured in forced mode every climate_every_s, independently
# of the particle window. Every value sent is the trimmed mean (minimum and
# maximum dropped) of the interval's samples.
#
# Status bits (protocol.kinds.AIR_STATUS, in this order):
#   pm_fault       no particle frame at all in the window: values null
#   pm_bad_frames  more than bad_frames_max frames failed their checks in the interval
#   climate_fault  a BME280 measurement failed in the interval; values null
#                  when none succeeded
#   no2_fault      not set by this firmware (no NO2 sensor is supported yet)
#   warmup         the particle sensor answered but was still warming up when
#                  the window closed: particle values null

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from time import ticks_diff as _ticks_diff
except ImportError:                  # CPython: plain integers, no wrap-around
    def _ticks_diff(new, old):
        return new - old

from firmware.average import TrimmedMean

# Bit values of protocol.kinds.AIR_STATUS (a test checks the order).
PM_FAULT = const(0x01)
PM_BAD_FRAMES = const(0x02)
CLIMATE_FAULT = const(0x04)
NO2_FAULT = const(0x08)
WARMUP = const(0x10)

# Particle sensor states
_PM_IDLE = const(0)        # asleep until the window opens
_PM_WAKING = const(1)      # wake sent, no frame yet
_PM_WARMUP = const(2)      # frames arrive and are discarded
_PM_SAMPLE = const(3)      # frames are averaged

_PM_POLL_MS = const(500)       # UART polling while the fan runs (frames come each 1-2.3 s)
_WAKE_RETRY_MS = const(5000)   # repeat the wake command while the sensor stays silent
_REQUEST_MS = const(1000)      # PMS5003 passive mode: one read request a second
_FRAMES_PER_POLL = const(16)
_BUSY_RETRIES = const(3)

_PM_BAUD = const(9600)         # SDS011 and PMS5003: 9600 8N1
_PM_MAX = const(20000)         # kinds table: 0..2000.0 ug/m3 in 0.1 steps
_T_MIN = const(-400)           # 0.1 degC, the BME280's operating range
_T_MAX = const(850)
_P_MIN = const(3000)           # 0.1 hPa
_P_MAX = const(11000)


class Node:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = cfg = ctx.config["air"]    # checked at boot (firmware.config)
        self._interval_ms = cfg["interval_s"] * 1000
        self._warmup_ms = cfg["warmup_s"] * 1000
        self._window_ms = (cfg["warmup_s"] + cfg["sample_s"]) * 1000
        self._climate_ms = min(cfg["climate_every_s"], cfg["interval_s"]) * 1000
        self._passive = cfg["pm_sensor"] == "pms5003" and cfg["pms_mode"] == "passive"
        self.pm = None
        self.bme = None
        self._bme_ready = False
        self.pm1 = TrimmedMean()
        self.pm2_5 = TrimmedMean()
        self.pm10 = TrimmedMean()
        self.temperature = TrimmedMean()    # 0.01 degC samples
        self.humidity = TrimmedMean()       # %RH * 1024 samples
        self.pressure = TrimmedMean()       # Pa samples
        self._pm_state = _PM_IDLE
        self._pm_heard = False       # any frame in this window (warm-up included)
        self._bad_mark = 0
        # Every deadline is a (reference tick, ms after it) pair compared with
        # ticks_diff only, so it survives the tick counter wrapping around.
        self._diff = getattr(ctx.hal, "ticks_diff", None) or _ticks_diff
        self._send_ref = None                     # the frame goes out (None: not polled yet)
        self._send_in = 0
        self._warm_ref = 0                        # first frame after the wake command
        self._wake_ref = 0                        # last wake command
        self._request_ref = 0                     # last passive-mode read request
        self._clim_ref = self._clim_in = 0        # next BME280 measurement starts
        self._ready_ref = self._ready_in = 0      # running measurement is done
        self._clim_pending = False
        self._clim_busy = 0
        self._clim_failed = 0
        # Figures for the console and tests
        self.discarded = 0           # warm-up frames read and dropped
        self.sends = 0

    # --- Role interface ------------------------------------------------

    def start(self):
        """Open the sensors; a missing BME280 is retried at every measurement."""
        cfg = self.cfg
        hal = self.ctx.hal
        name = cfg["pm_sensor"]
        climate = cfg["climate"] == "bme280"
        # Buses first, drivers' code after them: on a small heap the larger
        # buffers (the bench I2C's register image) need room that the many
        # small pieces of loaded code would otherwise cut up.
        i2c = hal.i2c(cfg["i2c"]) if climate else None
        uart = hal.uart(cfg["pm_uart"], _PM_BAUD) if name != "none" else None
        if name == "sds011":
            from firmware.drivers.sds011 import SDS011

            self.pm = sds = SDS011(uart)
            sds.wake()                   # it ignores everything else while asleep
            sds.set_active()
            sds.set_continuous()
        elif name == "pms5003":
            from firmware.drivers.pms5003 import PMS5003

            self.pm = pms = PMS5003(uart, cfg["pms_cf1"])
            pms.wake()
            if self._passive:
                pms.set_passive()
            else:
                pms.set_active()
        if self.pm is not None:
            self._bad_mark = self.pm.bad_frames
        if climate:
            from firmware.drivers.bme280 import BME280

            self.bme = BME280(i2c, cfg["bme280_addr"])
            self._bme_begin()
        self.ctx.log("air: %s, climate %s, every %d s" % (
            name, cfg["climate"] if self._bme_ready or self.bme is None
            else "bme280 NOT FOUND", cfg["interval_s"]))

    def poll(self, now_ms):
        """Do what is due at `now_ms`; return ms until the next call is wanted."""
        if self._send_ref is None:
            # After boot the fan starts at once, so the first frame leaves one
            # window (or one interval when that is shorter) after the start.
            self._send_ref = self._clim_ref = now_ms
            self._send_in = min(self._window_ms, self._interval_ms)
            self._clim_in = 0
            if self.ctx.duty is not None:
                # On a LoRa link the first frame is also put off by a phase drawn
                # over a whole interval, with the device id mixed in, so nodes
                # whose power returns together do not send in step from then on.
                # (Fibonacci hashing: consecutive ids land far apart in any period.)
                period = self._interval_ms // 1000
                spread = ((self.ctx.device_id * 2654435761) & 0xFFFFFFFF) * period >> 32
                self._send_in += (spread + self.ctx.hal.random_below(period)) % period * 1000
        if self.pm is not None:
            self._poll_pm(now_ms)
        if self.bme is not None:
            self._poll_climate(now_ms)
        if self._left(now_ms, self._send_ref, self._send_in) <= 0:
            self._finish(now_ms)
        return self._next_ms(now_ms)

    def status(self):
        """Counters for the console."""
        out = {"sends": self.sends, "discarded": self.discarded,
               "pm_state": self._pm_state, "bme280": self._bme_ready}
        if self.pm is not None:
            out["pm_frames"] = self.pm.frames
            out["pm_bad_frames"] = self.pm.bad_frames
            out["pm_skipped"] = self.pm.skipped
        return out

    # --- schedule --------------------------------------------------------

    def _left(self, now, ref, delay):
        # ms until `delay` ms after tick `ref` (<= 0: due)
        return delay - self._diff(now, ref)

    def _next_ms(self, now):
        wait = self._left(now, self._send_ref, self._send_in)
        if self.pm is not None:
            if self._pm_state == _PM_IDLE:      # until the particle window opens
                wait -= self._window_ms
            else:
                wait = min(wait, _PM_POLL_MS)
        if self.bme is not None:
            if self._clim_pending:
                wait = min(wait, self._left(now, self._ready_ref, self._ready_in))
            else:
                wait = min(wait, self._left(now, self._clim_ref, self._clim_in))
        return wait if wait > 0 else 0

    # --- particle sensor -------------------------------------------------

    def _poll_pm(self, now):
        pm = self.pm
        if self._pm_state == _PM_IDLE:
            # ms until the particle window of this interval opens
            if self._left(now, self._send_ref, self._send_in - self._window_ms) > 0:
                return
            pm.flush()                   # bytes from before the sleep are stale
            pm.wake()
            self._pm_state = _PM_WAKING
            self._wake_ref = self._request_ref = now
            if self._passive:
                pm.request()
        elif self._passive and self._left(now, self._request_ref, _REQUEST_MS) <= 0:
            pm.request()
            self._request_ref = now
        for _ in range(_FRAMES_PER_POLL):
            if not pm.poll():
                break
            self._pm_heard = True
            if self._pm_state == _PM_WAKING:
                self._pm_state = _PM_WARMUP
                self._warm_ref = now
            if self._pm_state == _PM_WARMUP:
                if self._left(now, self._warm_ref, self._warmup_ms) > 0:
                    self.discarded += 1
                    continue
                self._pm_state = _PM_SAMPLE
            if pm.pm1 is not None:
                self.pm1.add(pm.pm1)
            self.pm2_5.add(pm.pm2_5)
            self.pm10.add(pm.pm10)
        state = self._pm_state
        if state == _PM_WAKING and self._left(now, self._wake_ref, _WAKE_RETRY_MS) <= 0:
            pm.wake()
            self._wake_ref = now
        elif state == _PM_WARMUP and self._left(now, self._warm_ref, self._warmup_ms) <= 0:
            self._pm_state = _PM_SAMPLE

    # --- BME280 ----------------------------------------------------------

    def _bme_begin(self):
        try:
            self.bme.begin()
            self._bme_ready = True
        except (OSError, ValueError) as err:
            self._bme_ready = False
            self._clim_failed += 1
            self.ctx.log("air: bme280: %r" % (err,))

    def _poll_climate(self, now):
        bme = self.bme
        if self._clim_pending:
            if self._left(now, self._ready_ref, self._ready_in) > 0:
                return
            try:
                if bme.busy() and self._clim_busy < _BUSY_RETRIES:
                    self._clim_busy += 1
                    self._ready_ref = now
                    self._ready_in = bme.measure_ms()
                    return
                self._clim_pending = False
                ok = bme.read()
            except OSError:
                self._clim_pending = False
                self._bme_ready = False
                ok = False
            temp = bme.temperature
            press = bme.pressure
            # A sample outside the sensor's operating range is a failed measurement.
            if (ok and bme.humidity is not None and press is not None
                    and _T_MIN * 10 <= temp <= _T_MAX * 10
                    and _P_MIN * 10 <= press <= _P_MAX * 10):
                self.temperature.add(temp)
                self.humidity.add(bme.humidity)
                self.pressure.add(press)
            else:
                self._clim_failed += 1
            return
        late = -self._left(now, self._clim_ref, self._clim_in)
        if late < 0:
            return
        # Next measurement one period after this one was due (no drift), or
        # one period from now when more than a period behind.
        self._clim_ref = now
        self._clim_in = self._climate_ms - late if late < self._climate_ms else self._climate_ms
        if not self._bme_ready:
            self._bme_begin()
            if not self._bme_ready:
                return
        try:
            wait = bme.start()
        except OSError:
            self._bme_ready = False
            self._clim_failed += 1
            return
        self._clim_pending = True
        self._clim_busy = 0
        self._ready_ref = now
        self._ready_in = wait

    # --- the frame -------------------------------------------------------

    def values(self):
        """Raw field values and status bits of the interval so far (kinds table units)."""
        status = 0
        values = {"pm1": None, "pm2_5": None, "pm10": None,
                  "temperature": None, "humidity": None, "pressure": None}
        pm = self.pm
        if pm is not None:
            if self.pm2_5.count:
                if self.pm1.count:               # the SDS011 has no PM1
                    values["pm1"] = min(self.pm1.mean(), _PM_MAX)
                values["pm2_5"] = min(self.pm2_5.mean(), _PM_MAX)
                values["pm10"] = min(self.pm10.mean(), _PM_MAX)
            elif self._pm_heard:
                status |= WARMUP
            else:
                status |= PM_FAULT
            if pm.bad_frames - self._bad_mark > self.cfg["bad_frames_max"]:
                status |= PM_BAD_FRAMES
        if self.bme is not None:
            if self.temperature.count:
                values["temperature"] = self.temperature.mean(10)
                values["humidity"] = min(self.humidity.mean(1024), 100)
                values["pressure"] = self.pressure.mean(10)
            if self._clim_failed or not self.temperature.count:
                status |= CLIMATE_FAULT
        values["status"] = status
        return values

    def _finish(self, now):
        values = self.values()
        sent = self.ctx.send(values)
        self.sends += 1
        self.ctx.log("air: %s pm2.5=%s pm10=%s t=%s rh=%s p=%s status=0x%02x" % (
            "sent" if sent else "deferred", values["pm2_5"], values["pm10"],
            values["temperature"], values["humidity"], values["pressure"], values["status"]))
        for avg in (self.pm1, self.pm2_5, self.pm10,
                    self.temperature, self.humidity, self.pressure):
            avg.reset()
        self._clim_failed = 0
        if self.pm is not None:
            self._bad_mark = self.pm.bad_frames
        # Next frame one interval after this one was due (no drift), or one
        # interval from now when more than an interval behind.
        late = -self._left(now, self._send_ref, self._send_in)
        self._send_ref = now
        self._send_in = self._interval_ms - late if late < self._interval_ms else self._interval_ms
        if self.pm is not None and self._window_ms < self._interval_ms:
            self.pm.sleep()
            self._pm_state = _PM_IDLE
            self._pm_heard = False
        # Always on: keep sampling; the fan never stopped, so no new warm-up.


# The hardware abstraction layer: one module per MicroPython port.
#
#   firmware.hal.esp32   ESP32 / ESP32-S3 boards (machine, esp32)
#   firmware.hal.rp2     RP2040 boards (machine, rp2)
#   firmware.hal.unix    the bench: ptys, files and pipes named in config.json
#
# These modules (and firmware.hal.board, their shared base) are the only code
# in the firmware that imports `machine`. Node logic talks to a Hal object:
#   ticks_ms() ticks_diff(a, b) time() sleep_ms(ms) max_sleep_ms() random_below(n)
#   uart(name, baud) i2c(name) pin(name) adc(name) led()
#   pulse_source(name, direction, debounce_ms) lora_modem(link_cfg)
#   watchdog(timeout_ms) reset_cause() safe_mode(reason) reset() set_time(unix_s)
# firmware.boot.port_hal() picks the module for the running port.


class Debouncer:
    """Accepts an edge only when at least `debounce_ms` passed since the last accepted one.

    Called from a pin IRQ on boards (no allocation: ints and a ticks difference)
    and for every simulated edge on the bench, so both count the same way.
    """

    def __init__(self, debounce_ms, ticks_diff):
        self.debounce_ms = debounce_ms
        self.ticks_diff = ticks_diff
        self.last = None
        self.rejected = 0

    def edge(self, now_ms):
        """True if the edge at `now_ms` (ticks) is a pulse, False if it is a bounce."""
        if self.last is not None and self.ticks_diff(now_ms, self.last) < self.debounce_ms:
            self.rejected += 1
            return False
        self.last = now_ms
        return True


class NullWatchdog:
    """Stands in for machine.WDT where there is none (bench, or wdt_s = 0)."""

    def feed(self):
        """Nothing to feed."""
        return None


class NullLed:
    """A board without a user LED."""

    def blink(self, times=1, on_ms=40, off_ms=160):
        """Nothing to blink."""
        return None

    def set(self, on):
        """Nothing to switch."""
        return None


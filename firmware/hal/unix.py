# The bench port: the MicroPython unix port standing in for a board.
#
# config.json "bench" wires the node to files, pipes and ptys:
#   "uart":  {"link": "/dev/pts/7", "pm": "/dev/pts/8"}   serial devices (ptys)
#   "pulse": {"pulse": "pulses.txt"}                      pulse event files or FIFOs
#   "pin":   {"tamper": "tamper.txt"}                     file holding 0 or 1
#   "adc":   {"battery": "battery.txt"}                   file holding millivolts
#   "i2c":   {"i2c0": "bus0.txt"}                         register-image file (drivers/regimage)
#   "radio": {"path": "radio.txt", "rx_path": "dl.txt"}   bench radio (unix_bench.BenchRadio)
#   "time_scale": 3600       simulated seconds per real second (1 = real time;
#                            0 = a stepped clock that moves only when the node
#                            sleeps, so a run's schedule never depends on load)
#   "start_time": 1700000000 simulated unix time at boot (default: the host clock)
#   "stop_after_s": 86400    leave the main loop after this much simulated time
#   "seed": 1                random seed for jitter (default: from os.urandom)
#   "pause_writes_ms": 0     pause state writes before their rename (kill -9 tests) ...
#   "pause_writes_of": null  ... of these state names only (null: all)
#   "hold_write": null       ["fcnt", 2]: the 2nd paused fcnt write of this boot prints
#                            "knute: holding the fcnt write" and never ends (kill -9 tests)
#   "trace_writes": false    print "knute: writing <name>" before every state write
#   "rx_wait_real_ms": 0     real ms a receive window may wait for a TX line, clock held
#
# Pulse file lines (one event each; blank lines and "#" comments ignored):
#   N                  N pulses now (negative: reverse flow)
#   @T N               N pulses at simulated unix time T
#   @T N S             N edges S ms apart starting at T, through the debouncer
#
# Bench radio lines (one packet each; times in unix ms of the node's clock):
#   RX <rssi_dbm> <snr_db> <hex payload> <end_ms> <freq_hz> <sf>   uplinks, in "path"
#   TX <start_ms> <freq_hz> <sf> <hex payload>       sent to the node, in "rx_path"
# (a node writes the channel and SF it sent on; a bridge also reads the older
# forms without end_ms and/or the channel: firmware/hal/unix_bench.py)
#
# The file inputs (pulses, pins, battery) are in firmware.hal.unix_inputs and
# the bench radio in firmware.hal.unix_bench, loaded only by nodes that use them.

import select
import time

_TICKS_MASK = 0x3FFFFFFF
_POLL_REAL_MS = 20           # longest real-time nap between polls of the bench inputs


class PtyUart:
    """A serial device with the read(n)/write(b)/any() of machine.UART (see wiring.uart)."""

    def __init__(self, handle):
        self.handle = handle
        self.poller = select.poll()
        self.poller.register(handle, select.POLLIN)

    def any(self):
        """1 when bytes are waiting, else 0 (machine.UART gives a count; 1 is enough)."""
        return 1 if self.poller.poll(0) else 0

    def read(self, n=256):
        """Up to n waiting bytes, or None when there are none."""
        return self.handle.read(n) or None

    def write(self, data):
        """Write all of `data` (the tty is blocking for writes); the byte count."""
        return self.handle.write(data)


class Hal:
    """The unix-port HAL: simulated time here, bench wiring in unix_wiring.

    uart(), pin(), adc(), i2c(), pulse_source(), lora_modem(), led(),
    reset_cause(), safe_mode(), reset() and configure() are functions of
    firmware.hal.unix_wiring, reached through __getattr__: they are needed
    at boot, and the app unloads that module afterwards so its code leaves the
    heap (on a 64 KiB heap every kilobyte counts). watchdog() is here: the
    main loop asks for it after that, and must not bring the module back.
    """

    port = "unix"
    ticks_diff = time.ticks_diff
    offset_ms = 0                   # the node's clock minus board time (set by a downlink)
    clock_set = False               # a downlink set the clock since the last reset
    deep = False                    # power.sleep "deep": a simulated ULP counts the pulses

    def __init__(self):
        self.scale = 1
        self.start_s = int(time.time())
        self.t0_ns = time.time_ns()
        self.bench = {}
        self.stop_ms = None

    def __getattr__(self, name):
        from firmware.hal import unix_wiring

        wiring = getattr(unix_wiring, name, None)
        if wiring is None:      # strip(), network(): the display's, in their own module
            from firmware.hal import unix_strip

            wiring = getattr(unix_strip, name)
        return lambda *args: wiring(self, *args)

    def watchdog(self, timeout_ms):
        """The bench has no watchdog."""
        from firmware.hal import NullWatchdog

        return NullWatchdog()

    def _elapsed_ms(self):
        if not self.scale:          # the stepped clock: t0_ns counts the time slept
            return self.t0_ns // 1000000
        return int((time.time_ns() - self.t0_ns) * self.scale) // 1000000

    def ticks_ms(self):
        """Simulated milliseconds, wrapping like time.ticks_ms()."""
        return self._elapsed_ms() & _TICKS_MASK

    def time(self):
        """The node's clock in unix seconds: board time plus the downlink clock's offset."""
        return (self.start_s * 1000 + self._elapsed_ms() + self.offset_ms) // 1000

    def time_ms(self):
        """Board time in unix milliseconds, without the offset (the bench radio's clock)."""
        return self.start_s * 1000 + self._elapsed_ms()

    def set_time(self, unix_s):
        """Set the simulated clock so that time() gives `unix_s` (as a board sets its RTC)."""
        self.start_s += unix_s - self.time()

    def stopping(self):
        """True once the bench run's stop_after_s of simulated time has passed."""
        return self.stop_ms is not None and self._elapsed_ms() >= self.stop_ms

    # In deep sleep the CPU is off until the RTC timer wakes it on time: the
    # simulated clock jumps by `ms` at once, so a loaded host cannot make the
    # node wake late (and a bench week runs at the speed of its polls).
    def sleep_ms(self, ms):
        """Sleep `ms` simulated milliseconds."""
        if ms > 0:
            if not self.scale:
                self.t0_ns += ms * 1000000
            elif self.deep:
                self.t0_ns -= int(ms * 1000000 / self.scale)
            else:
                time.sleep(ms / 1000 / self.scale)

    def max_sleep_ms(self):
        """Longest nap before the bench inputs are polled again (simulated ms)."""
        return int(_POLL_REAL_MS * self.scale) if self.scale else 3600000

    def random_below(self, n):
        """A random integer 0 <= r < n."""
        import random

        return random.getrandbits(30) % n if n > 0 else 0

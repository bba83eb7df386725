# The bench port: the MicroPython unix port standing in for a board.
#
# config.json "bench" wires the node to files, pipes and ptys:
#   "uart":  {"link": "/dev/pts/7", "pm": "/dev/pts/8"}   serial devices (ptys)
#   "pulse": {"pulse": "pulses.txt"}                      pulse event files or FIFOs
#   "pin":   {"tamper": "tamper.txt"}                     file holding 0 or 1
#   "adc":   {"battery": "battery.txt"}                   file holding millivolts
#   "i2c":   {"i2c0": "bus0.txt"}                         register-image file (drivers/regimage)
#   "radio": {"path": "radio.txt"}                        bench radio (unix_bench.BenchRadio)
#   "time_scale": 3600       simulated seconds per real second (1 = real time)
#   "start_time": 1700000000 simulated unix time at boot (default: the host clock)
#   "stop_after_s": 86400    leave the main loop after this much simulated time
#   "seed": 1                random seed for jitter (default: from os.urandom)
#   "pause_writes_ms": 0     pause halfway through state writes (kill -9 tests) ...
#   "pause_writes_of": null  ... of these state names only (null: all)
#   "trace_writes": false    print "knute: writing <name>" before every state write
#
# Pulse file lines (one event each; blank lines and "#" comments ignored):
#   N                  N pulses now (negative: reverse flow)
#   @T N               N pulses at simulated unix time T
#   @T N S             N edges S ms apart starting at T, through the debouncer
#
# Bench radio lines, both directions (one packet each):
#   RX <rssi_dbm> <snr_db> <hex payload>

import select
import time

from firmware.hal import Debouncer

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


class LineSource:
    """Complete text lines from a growing file or a FIFO, without blocking."""

    def __init__(self, path):
        self.path = path
        self.handle = None
        self.partial = b""

    def readline(self):
        """The next complete line (stripped, str), or None for now."""
        if self.handle is None:
            try:
                # "r+": opening a FIFO read-write does not wait for a writer.
                self.handle = open(self.path, "r+b")  # noqa: SIM115 (kept open)
            except OSError:
                return None
            self.poller = select.poll()
            self.poller.register(self.handle, select.POLLIN)
        while self.poller.poll(0):
            chunk = self.handle.readline()
            if not chunk:
                return None
            self.partial += chunk
            if chunk[-1] != 10:
                return None     # the rest of the line is not written yet
            line = self.partial.decode().strip()
            self.partial = b""
            if line and line[0] != "#":
                return line
        return None


class FilePulseSource:
    """Pulse events from a bench file: see the line formats at the top."""

    def __init__(self, hal, path, debounce_ms):
        self.hal = hal
        self.lines = LineSource(path)
        self.debouncer = Debouncer(debounce_ms, lambda a, b: a - b)
        self.pending = None      # (t_s, forward, reverse) read but not yet due
        self.bad_lines = 0

    def _parse(self, line):
        parts = line.split()
        try:
            if parts[0].startswith("@"):
                t = int(parts[0][1:])
                count = int(parts[1])
                spacing = int(parts[2]) if len(parts) > 2 else 0
            else:
                t = self.hal.time()
                count = int(parts[0])
                spacing = 0
        except (ValueError, IndexError):
            self.bad_lines += 1
            return None
        n = abs(count)
        if spacing:
            # n edges `spacing` ms apart, through the same debouncer a board uses
            accepted = 0
            edge_ms = t * 1000
            for _ in range(n):
                if self.debouncer.edge(edge_ms):
                    accepted += 1
                edge_ms += spacing
            n = accepted
        if count < 0:
            return (t, 0, n)
        return (t, n, 0)

    def _fill(self):
        while self.pending is None:
            line = self.lines.readline()
            if line is None:
                return
            self.pending = self._parse(line)

    def next_due(self):
        """Simulated time of the next event already read, or None."""
        self._fill()
        return None if self.pending is None else self.pending[0]

    def take(self, now_s):
        """(t_s, forward_pulses, reverse_pulses) of the next event due by now_s, or None."""
        self._fill()
        event = self.pending
        if event is None or event[0] > now_s:
            return None
        self.pending = None
        return event


class FileInput:
    """An input pin (value(): 0/1) or battery ADC (read_mv()) read from a file."""

    def __init__(self, path):
        self.path = path

    def read_mv(self):
        """The number in the file, or None when it is absent or unreadable."""
        try:
            with open(self.path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def value(self):
        """0 or 1 (an absent file reads 0)."""
        return 1 if self.read_mv() else 0


class Hal:
    """The unix-port HAL: simulated time here, bench wiring in unix_wiring.

    uart(), pin(), adc(), i2c(), pulse_source(), lora_modem(), watchdog(),
    led(), reset_cause(), safe_mode(), reset() and configure() are functions
    of firmware.hal.unix_wiring, reached through __getattr__: they are needed
    at boot, and the app unloads that module afterwards so its code leaves the
    heap (on a 64 KiB heap every kilobyte counts).
    """

    port = "unix"
    ticks_diff = time.ticks_diff

    def __init__(self):
        self.scale = 1
        self.start_s = int(time.time())
        self.t0_ns = time.time_ns()
        self.bench = {}
        self.stop_ms = None

    def __getattr__(self, name):
        from firmware.hal import unix_wiring

        wiring = getattr(unix_wiring, name)
        return lambda *args: wiring(self, *args)

    def _elapsed_ms(self):
        return int((time.time_ns() - self.t0_ns) * self.scale) // 1000000

    def ticks_ms(self):
        """Simulated milliseconds, wrapping like time.ticks_ms()."""
        return self._elapsed_ms() & _TICKS_MASK

    def time(self):
        """Simulated unix seconds."""
        return self.start_s + self._elapsed_ms() // 1000

    def set_time(self, unix_s):
        """Set the simulated clock (as a board sets its RTC)."""
        self.start_s += unix_s - self.time()

    def stopping(self):
        """True once the bench run's stop_after_s of simulated time has passed."""
        return self.stop_ms is not None and self._elapsed_ms() >= self.stop_ms

    def sleep_ms(self, ms):
        """Sleep `ms` simulated milliseconds."""
        if ms > 0:
            time.sleep(ms / 1000 / self.scale)

    def max_sleep_ms(self):
        """Longest nap before the bench inputs are polled again (simulated ms)."""
        return int(_POLL_REAL_MS * self.scale)

    def random_below(self, n):
        """A random integer 0 <= r < n."""
        import random

        return random.getrandbits(30) % n if n > 0 else 0

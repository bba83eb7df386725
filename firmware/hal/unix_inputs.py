# Bench inputs of the unix-port HAL, loaded only by the nodes that have them
# (a water meter's pulses, tamper pin and battery; the bench radio's packet
# lines): pulse events, pin levels and millivolts read from files or FIFOs.
# See firmware/hal/unix.py for the file formats.

import select

from firmware.hal import Debouncer


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

# The bench's LED strip: the NeoPixel interface (n, fill, __setitem__,
# __getitem__, write) with every write() appended as one line to a file (or a
# pty), so tests and the demo can follow the colours over time:
#
#   <unix_s> <ticks_ms> #rrggbb*<count> [#rrggbb*<count> ...]
#
# Runs of equal pixels are written once with their count. Times are the
# node's simulated clock (bench.time_scale).
#
# strip() and network() are the display's HAL functions on the bench; they live
# here, not in firmware.hal.unix_wiring, which every bench node loads at boot
# (their names would cost the other roles heap they do not have to spare).


class FileStrip:
    """A simulated WS2812 strip of `n` pixels that logs each write() to `path`."""

    def __init__(self, hal, path, n):
        self.hal = hal
        self.n = n
        self.buf = bytearray(3 * n)
        self.handle = open(path, "a")  # noqa: SIM115 (open for the node's life)
        self.writes = 0

    def __setitem__(self, i, rgb):
        j = 3 * i
        self.buf[j] = rgb[0]
        self.buf[j + 1] = rgb[1]
        self.buf[j + 2] = rgb[2]

    def __getitem__(self, i):
        j = 3 * i
        return (self.buf[j], self.buf[j + 1], self.buf[j + 2])

    def fill(self, rgb):
        """Every pixel to (r, g, b)."""
        for i in range(self.n):
            self[i] = rgb

    def write(self):
        """Append the pixels as one line."""
        buf = self.buf
        parts = ["%d %d" % (self.hal.time(), self.hal.ticks_ms())]
        i = 0
        while i < self.n:
            j = i + 1
            while j < self.n and buf[3 * j:3 * j + 3] == buf[3 * i:3 * i + 3]:
                j += 1
            parts.append("#%02x%02x%02x*%d" % (buf[3 * i], buf[3 * i + 1], buf[3 * i + 2],
                                                j - i))
            i = j
        self.handle.write(" ".join(parts) + "\n")
        self.handle.flush()
        self.writes += 1


def strip(hal, name, n):
    """The file (or pty) wired as LED strip `name`: a simulated WS2812 strip of n pixels."""
    from firmware.hal.unix_wiring import wire

    return FileStrip(hal, wire(hal, "strip", name), n)


def network(hal, wifi):
    """The bench host is on the network already."""
    return None

# Pulses counted by a coprocessor while the CPU deep-sleeps (power.sleep
# "deep"): the ESP32's ULP (tools/ulp.py) on a board, a simulated one
# (firmware.hal.unix_ulp.SimUlp) on the bench. Loaded only in deep sleep.


class UlpCounter:
    """Pulses a coprocessor counted while the CPU slept (power.sleep "deep").

    `read()` gives the (forward, reverse) counters, 16 bits each, that only
    ever grow (tools/ulp.py on ESP32; a file on the bench). take() returns
    what they grew by since `last`. The water meter calls take() until it
    returns None, adding each result to its index in between; each call
    first moves `last` up to what the previous one returned, which the
    meter has added by then. So a state write inside that loop (an hour
    closing before the add) holds the old index with the old `last`, and
    the one after it the new index with the new `last`: a reset before a
    write takes the same pulses again, after it never (docs/firmware.md,
    "Power"). With no saved `last` (the first boot) counting starts from
    the counters as they are. The pulses are put at the second before the
    take: they all came before it.

    A poll that fails between a take and its add (a MemoryError in the
    hour's state write) leaves the take unadded: the next take moves `last`
    only when it comes in the same poll (the same `now_s`; the main loop
    waits a second after a failed poll), else it takes those pulses again.
    """

    def __init__(self, read):
        self.read = read
        self.last = None            # [forward, reverse] already in the index
        self.next = None            # the counters the last take read
        self.at = None              # ... at this now_s (the poll it came in)

    def next_due(self):
        """The counter wakes nobody: the meter wakes on its hours."""
        return None

    def take(self, now_s):
        """(now_s - 1, forward, reverse) counted since the last take, or None."""
        last = self.last
        if self.next is not None:
            if now_s == self.at:        # the same poll: the meter added the previous take
                last[0] = self.next[0]
                last[1] = self.next[1]
            self.next = None
        fwd, rev = self.read()
        if last is None:
            self.last = [fwd, rev]  # first boot: count from here
            return None
        forward = (fwd - last[0]) & 0xFFFF
        reverse = (rev - last[1]) & 0xFFFF
        if not forward and not reverse:
            return None
        self.next = (fwd, rev)
        self.at = now_s
        return (now_s - 1, forward, reverse)


# EU868 duty-cycle accounting.
#
# ETSI EN 300 220-2 and ERC Recommendation 70-03 annex 1 limit the share of
# time a device may transmit in each sub-band of 863-870 MHz, measured over
# one hour. The node keeps a short ledger of its own transmissions (end time,
# computed time on air) and sends only when the frame it is about to send fits
# in the sub-band's budget for the hour ending then; otherwise the frame is
# deferred and counted. The ledger is bounded: when it is full of transmissions
# from the last hour the node defers, which can only make it stricter.
#
# A node hops: each frame goes out on a channel of radio.channels drawn at
# random among those whose sub-band has room for it now (the default plan, a
# concentrator's eight channels, spans h1.4 and g1). One ledger holds every
# sub-band's transmissions, each entry tagged with its sub-band, and each
# sub-band's budget is checked on its own entries. Hopping evenly over the
# plan is what lets a concentrator's eight demodulators share a city's load
# (docs/radio.md). One class, few methods: on a node each one costs heap.

from protocol import airtime

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

_WINDOW_S = const(3600)
_LEDGER = const(24)

# The sub-band table and the time-on-air formula are protocol.airtime's (one
# source for the node, the gateway tools and `knute airtime`).
sub_band = airtime.sub_band
time_on_air_ms = airtime.time_on_air_ms


class DutyCycle:
    """Transmissions per sub-band over the last hour, and the channel the next frame takes.

    `channels` is one frequency or a list (radio.channels). wait_s() picks the
    channel (freq_hz) and its sub-band (band, budget_ms); used_ms() and
    record() then apply to that sub-band.
    """

    def __init__(self, channels, bw_hz, random_below=None):
        if isinstance(channels, int):
            channels = [channels]
        self.channels = channels
        self.random_below = random_below
        self._names = []                        # the sub-bands the plan uses
        self._budgets = []                      # and their budgets (ms an hour)
        self._of = bytearray(len(channels))     # channel -> its sub-band's index
        for i in range(len(channels)):
            band, limit = sub_band(channels[i], bw_hz)
            if band not in self._names:
                self._names.append(band)
                self._budgets.append(_WINDOW_S * 1000 * limit // 10000)
            self._of[i] = self._names.index(band)
        self._end_s = [0] * _LEDGER
        self._toa_ms = [0] * _LEDGER
        self._in = bytearray(_LEDGER)           # entry -> its sub-band's index
        self.freq_hz = channels[0]
        self._cur = self._of[0]
        self.band = self._names[self._cur]
        self.budget_ms = self._budgets[self._cur]
        self.deferred = 0       # frames that had to wait for the budget
        self.sent = 0
        self.airtime_ms = 0     # total time on air since boot

    def used_ms(self, now_s, band=None):
        """Time on air in the hour ending at `now_s` in sub-band index `band` (default: chosen)."""
        if band is None:
            band = self._cur
        total = 0
        for i in range(_LEDGER):
            if self._toa_ms[i] and self._end_s[i] > now_s - _WINDOW_S and self._in[i] == band:
                total += self._toa_ms[i]
        return total

    def wait_s(self, now_s, toa_ms):
        """0 if a frame of `toa_ms` may start now on some channel, else seconds until it may.

        With 0, freq_hz is the channel drawn at random among those whose
        sub-band has room; otherwise band and budget_ms name the sub-band
        that has room first.
        """
        toa_ms = int(toa_ms + 0.999)
        free = False
        for i in range(_LEDGER):
            if not self._toa_ms[i] or self._end_s[i] <= now_s - _WINDOW_S:
                free = True
                break
        waits = []
        for band in range(len(self._names)):
            budget = self._budgets[band]
            used = self.used_ms(now_s, band)
            wait = _WINDOW_S    # never fits; the caller reports it
            if toa_ms > budget:
                pass
            elif free and used + toa_ms <= budget:
                wait = 0
            else:
                # Wait until enough old transmissions leave the window (or a slot frees).
                recent = []
                for i in range(_LEDGER):
                    if self._toa_ms[i] and self._end_s[i] > now_s - _WINDOW_S:
                        recent.append((self._end_s[i],
                                       self._toa_ms[i] if self._in[i] == band else 0))
                recent.sort()
                for end, toa in recent:
                    used -= toa
                    if used + toa_ms <= budget:
                        wait = end + _WINDOW_S - now_s
                        break
            waits.append(wait)
        # A channel drawn uniformly among those with room (reservoir sampling:
        # the k-th such channel replaces the choice with probability 1/k), else
        # the one whose sub-band has room first.
        ok = 0
        best = 0
        for chan in range(len(self.channels)):
            wait = waits[self._of[chan]]
            if wait == 0:
                ok += 1
                if ok == 1 or self.random_below(ok) == 0:
                    best = chan
            elif ok == 0 and wait < waits[self._of[best]]:
                best = chan
        self.freq_hz = self.channels[best]
        self._cur = self._of[best]
        self.band = self._names[self._cur]
        self.budget_ms = self._budgets[self._cur]
        return waits[self._cur]

    def record(self, end_s, toa_ms):
        """Enter a transmission in the chosen sub-band that ended at `end_s` into the ledger."""
        toa_ms = int(toa_ms + 0.999)
        slot = 0
        oldest = None
        for i in range(_LEDGER):
            if not self._toa_ms[i]:
                slot = i
                break
            if oldest is None or self._end_s[i] < oldest:
                oldest = self._end_s[i]
                slot = i
        self._end_s[slot] = end_s
        self._toa_ms[slot] = toa_ms
        self._in[slot] = self._cur
        self.sent += 1
        self.airtime_ms += toa_ms

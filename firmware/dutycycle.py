# EU868 duty-cycle accounting.
#
# ETSI EN 300 220-2 and ERC Recommendation 70-03 annex 1 limit the share of
# time a device may transmit in each sub-band of 863-870 MHz, measured over
# one hour. The node keeps a short ledger of its own transmissions (end time,
# computed time on air) and sends only when the frame it is about to send fits
# in the sub-band's budget for the hour ending then; otherwise the frame is
# deferred and counted. The ledger is bounded: when it is full of transmissions
# from the last hour the node defers, which can only make it stricter.

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
    """Transmissions in one sub-band over the last hour, and whether one more fits."""

    def __init__(self, freq_hz, bw_hz):
        self.band, self.limit = sub_band(freq_hz, bw_hz)
        self.budget_ms = _WINDOW_S * 1000 * self.limit // 10000
        self._end_s = [0] * _LEDGER
        self._toa_ms = [0] * _LEDGER
        self.deferred = 0       # frames that had to wait for the budget
        self.sent = 0
        self.airtime_ms = 0     # total time on air since boot

    def used_ms(self, now_s):
        """Time on air in the hour ending at `now_s`."""
        total = 0
        for i in range(_LEDGER):
            if self._toa_ms[i] and self._end_s[i] > now_s - _WINDOW_S:
                total += self._toa_ms[i]
        return total

    def wait_s(self, now_s, toa_ms):
        """0 if a frame of `toa_ms` may start now, else seconds until it may."""
        toa_ms = int(toa_ms + 0.999)
        if toa_ms > self.budget_ms:
            return _WINDOW_S  # never fits; the caller reports it
        free = -1
        for i in range(_LEDGER):
            if not self._toa_ms[i] or self._end_s[i] <= now_s - _WINDOW_S:
                free = i
                break
        used = self.used_ms(now_s)
        if free >= 0 and used + toa_ms <= self.budget_ms:
            return 0
        # Wait until enough old transmissions leave the window.
        recent = []
        for i in range(_LEDGER):
            if self._toa_ms[i] and self._end_s[i] > now_s - _WINDOW_S:
                recent.append((self._end_s[i], self._toa_ms[i]))
        recent.sort()
        for end, toa in recent:
            used -= toa
            if used + toa_ms <= self.budget_ms:
                return end + _WINDOW_S - now_s
        return _WINDOW_S

    def record(self, end_s, toa_ms):
        """Enter a transmission that ended at `end_s` into the ledger."""
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
        self.sent += 1
        self.airtime_ms += toa_ms

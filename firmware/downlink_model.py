# The whole node-side downlink object for tests, simulators and tools: the
# receiving side of firmware.downlink plus the bookkeeping a running node
# does in firmware.downlink_window (the report, the alarm repeats, the key
# of the next uplink, the clock), in one object. A node never loads this
# module: its names would be interned for good by every apply, and the
# LoRa water meter must stay under 620 names through one (docs/firmware.md,
# "The downlink path's heap").

import os

from firmware import downlink

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

_ALARM_REPEATS = const(6)   # alarm frames sent at most this often without an ack
# protocol.downlink_send's numbers (tests/protocol/test_downlink.py checks them)
_FLAG_ALARM = const(4)
_FLAG_CLOCK = const(2)
_FLAG_REKEY = const(8)
_FLAG_UPDATE = const(16)
_FLAG_WANT = const(1)


def board_ms():
    """Milliseconds of the board's own time source (unix port: time since the epoch)."""
    import time

    try:
        return time.time_ns() // 1000000
    except AttributeError:
        return int(time.time() * 1000)


class Downlink(downlink.Downlink):
    """firmware.downlink.Downlink with the report and alarm bookkeeping of a node."""

    def __init__(self, store, device_id, config_path="config.json", time_ms=None,
                 upd_root="upd", lib="lib", pause=None):
        super().__init__(store, device_id, config_path, time_ms or board_ms, upd_root, lib,
                         pause)

    def uplink_key(self):
        """The key the next uplink is sealed with: the new one while a rotation is pending."""
        return self.key_next if self.key_next is not None else self.key

    def now_ms(self):
        """Unix time in ms by the node's clock, or None before the first clock command."""
        if self.offset_ms is None:
            return None
        return self.time_ms() + self.offset_ms

    def alarm_raised(self, bits):
        """Alarm bits that must be acknowledged; True if new bits were added."""
        if bits & ~self.alarm_bits:
            self.alarm_bits |= bits
            self.alarm_repeats = 0
            self._put_alarm()
            return True
        return False

    def alarm_repeat_due(self):
        """True (and counted) while an unacknowledged alarm may be sent again."""
        if not self.alarm_bits or self.alarm_repeats >= _ALARM_REPEATS:
            return False
        self.alarm_repeats += 1
        self._put_alarm()
        return True

    def report(self, want=False):
        """The report series for the next uplink, or None when there is nothing to say."""
        flags = 0
        if self.offset_ms is None or not self.clock_set:
            flags |= _FLAG_CLOCK
        if self.alarm_bits:
            flags |= _FLAG_ALARM
        if self.key_next is not None:
            flags |= _FLAG_REKEY
        if self._staging():
            flags |= _FLAG_UPDATE
        if flags or want:
            flags |= _FLAG_WANT
        if not flags and not self.entries:
            return None
        out = [flags]
        out.extend(self.entries)
        return out

    def report_sent(self):
        """The uplink with report() left: its entries are not sent again."""
        if self.entries:
            self.entries = []
            self.store.put("dlrep", [])

    def _staging(self):
        try:
            os.stat(self.upd_root + "/stage.json")
            return True
        except OSError:
            return False

# Persistent state on the board's flash (littlefs) or the bench directory.
#
# Every value is one small JSON file under state/. A write goes to
# "<name>.tmp" first and is then renamed over "<name>.json": littlefs and POSIX
# both make the rename atomic, so a power cut leaves either the old file or
# the new one, never half of each. A stray .tmp found at boot is the trace of
# such a cut and is removed.
#
# Flash wear: littlefs spreads writes over its free blocks. docs/firmware.md
# works out the budget; Store counts writes per day so the node can say on
# the console how many it did.

import json
import os

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

MAX_FCNT = const(0xFFFFFF)   # protocol.frame.MAX_FCNT (24-bit counter)
_SUFFIX = ".json"
_TMP = ".tmp"


class Store:
    """Small JSON values in `root`, each written atomically."""

    def __init__(self, root="state", clock=None, pause=None, trace=None):
        self.root = root
        self.clock = clock          # a function returning unix seconds, for the day count
        self.pause = pause          # bench only: pause(name) called halfway through a write
        self.trace = trace          # bench only: function called with "<name>" before a write
        self.writes_total = 0
        self.writes_today = 0
        self.writes_yesterday = 0
        self._day = -1
        self.recovered = []         # names whose interrupted write was found at boot
        try:
            os.mkdir(root)
        except OSError:
            pass                    # it exists
        for entry in os.listdir(root):
            if entry.endswith(_TMP):
                self.recovered.append(entry[:-len(_TMP)])
                os.remove(root + "/" + entry)

    def _path(self, name, suffix):
        return self.root + "/" + name + suffix

    def get(self, name, default=None):
        """The stored value of `name`, or `default` when absent or unreadable."""
        try:
            with open(self._path(name, _SUFFIX)) as handle:
                return json.loads(handle.read())
        except (OSError, ValueError):
            return default

    def put(self, name, value):
        """Store `value` under `name` atomically (temporary file, then rename)."""
        tmp = self._path(name, _TMP)
        if self.trace is not None:
            self.trace(name)
        with open(tmp, "w") as handle:
            # Written as it is encoded: no string of the whole value on the
            # heap (a water meter's state is some 250 bytes, and a LoRa node's
            # heap may not have them in one piece).
            json.dump(value, handle)
            if self.pause is not None:
                # Bench only: a window before the rename, the write's commit
                # point, in which a kill -9 cuts the write short.
                handle.flush()
                self.pause(name)
        os.rename(tmp, self._path(name, _SUFFIX))
        self._count()

    def _count(self):
        self.writes_total += 1
        if self.clock is not None:
            day = self.clock() // 86400
            if day != self._day:
                if self._day >= 0:
                    self.writes_yesterday = self.writes_today
                self.writes_today = 0
                self._day = day
        self.writes_today += 1


class FrameCounter:
    """Frame counters that are never used twice, even across a cut mid-write.

    The file "fcnt" holds a limit L: counters below L may already have been
    used, counters from L up never were. Before the node uses counter L it
    writes L + block, and only once that write has completed does it use L.
    After any reset it resumes at the stored L, skipping at most block - 1
    unused counters, and a write cut short leaves the old L in place, which is
    still above every counter used.
    """

    def __init__(self, store, block=16):
        self.store = store
        self.block = block
        rec = store.get("fcnt")
        start = 0
        if isinstance(rec, dict) and isinstance(rec.get("next"), int):
            start = rec["next"]
        self.next = start
        self.limit = start
        self.resumed_at = start

    def exhausted(self):
        """True once every 24-bit counter has been used: the node needs a new key."""
        return self.next > MAX_FCNT

    def peek(self):
        """The counter the next take() returns (None when exhausted)."""
        return None if self.exhausted() else self.next

    def take(self):
        """Reserve and return the next counter; None when exhausted."""
        if self.exhausted():
            return None
        if self.next >= self.limit:
            limit = self.next + self.block
            if limit > MAX_FCNT + 1:
                limit = MAX_FCNT + 1
            self.store.put("fcnt", {"next": limit})
            self.limit = limit
        fcnt = self.next
        self.next += 1
        return fcnt

# The bench's ULP coprocessor for power.sleep "deep" (see firmware/hal/unix.py
# for the pulse file format); loaded only by a deep-sleeping bench meter.

from firmware.hal.unix_inputs import FilePulseSource


class SimUlp:
    """The bench's ULP coprocessor (power.sleep "deep"): counts the pulse file into RTC memory.

    Like the ESP32's ULP it runs whatever the CPU does: every read() counts
    the file's events due by now into "rtc.json" (forward, reverse, 16 bits
    each, and how many lines it has counted), written atomically, so it
    carries on across a killed process as RTC memory does across a reset.
    Lines without a time count when read, as FilePulseSource's do.
    """

    def __init__(self, hal, path, debounce_ms, rtc="rtc.json"):
        self.hal = hal
        self.path = path
        self.rtc = rtc
        self.parser = FilePulseSource(hal, path, debounce_ms)
        self.at = (0, 0)            # (lines counted, file offset after them): no re-reading

    def read(self):
        """(forward, reverse) after counting what is due."""
        import json
        import os

        try:
            with open(self.rtc) as handle:
                mem = json.load(handle)     # as read: the node's heap is the board's
        except (OSError, ValueError):
            mem = [0, 0, 0]
        now = self.hal.time()
        done = 0
        try:
            handle = open(self.path)  # noqa: SIM115 (closed below)
        except OSError:
            return (mem[0], mem[1])
        if self.at[0] == mem[2]:
            handle.seek(self.at[1])
            done = mem[2]
        while True:
            offset = handle.tell()  # before the line: where the next read starts
            line = handle.readline()
            if not line:
                break
            line = line.strip()
            if not line or line[0] == "#":
                continue
            if done >= mem[2]:
                event = self.parser._parse(line)
                if event is not None and event[0] > now:
                    break
                if event is not None:
                    mem[0] = (mem[0] + event[1]) & 0xFFFF
                    mem[1] = (mem[1] + event[2]) & 0xFFFF
            done += 1
        handle.close()
        if done > mem[2]:
            mem[2] = done
            with open(self.rtc + ".tmp", "w") as handle:
                json.dump(mem, handle)
            os.rename(self.rtc + ".tmp", self.rtc)
        if done >= mem[2]:
            self.at = (done, offset)
        return (mem[0], mem[1])


def pulse_source(hal, path, debounce_ms):
    """The deep-sleeping bench meter's pulse source: the ULP counter over a SimUlp."""
    from firmware.ulp_counter import UlpCounter

    return UlpCounter(SimUlp(hal, path, debounce_ms).read)

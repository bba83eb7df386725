# A resynchronising reader for the fixed-header binary frames that UART
# particle sensors send. Subclasses say how long a frame is and whether it is
# valid; this class buffers bytes, skips garbage, counts and drops bad frames
# and never blocks: poll() works with whatever the UART already holds.
#
# Counters (cumulative since construction; callers take differences):
#   frames      good data frames parsed
#   replies     good command-reply frames parsed
#   bad_frames  a frame header was seen but the frame failed its checks
#               (checksum, tail byte, length field) or was cut short by the
#               next frame's header; the frame is dropped and the reader
#               resumes at the byte after that header
#   skipped     bytes dropped because they were not part of any frame

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# poll() results of a subclass's _check()
NOT_HEAD = const(-2)  # the first header byte is not followed by the second: garbage
BAD = const(-1)       # frame fails its checks
REPLY = const(0)      # valid frame that carries no reading (command reply)
DATA = const(1)       # valid data frame; the reading is stored on the driver


class FrameReader:
    # Subclasses set HEAD (first header byte) and implement
    #   _frame_len(buf, n) -> total length of the frame at buf[0], 0 when more
    #                         bytes are needed to know, NOT_HEAD when buf[0]
    #                         is a stray first header byte, BAD when the
    #                         header cannot start a valid frame
    #   _check(buf, length) -> BAD, REPLY or DATA (and store the reading)
    # (no stubs here that raise NotImplementedError: every method costs RAM on a node)

    HEAD = 0

    def __init__(self, uart, buf_len):
        self._uart = uart
        self._buf = bytearray(buf_len)
        self._n = 0
        self.frames = 0
        self.replies = 0
        self.bad_frames = 0
        self.skipped = 0

    def _fill(self):
        # Read what the UART holds, up to the free space in the buffer. A read
        # may return fewer bytes than any() announced, and some ports' any()
        # says only 1 for "something is waiting": read again (bounded).
        buf = self._buf
        for _ in range(len(buf)):
            space = len(buf) - self._n
            if space <= 0:
                return
            avail = self._uart.any()
            if not avail:
                return
            chunk = self._uart.read(avail if avail < space else space)
            if not chunk:
                return
            n = self._n
            end = len(buf)
            for byte in chunk:
                if n == end:        # more than asked for: the rest is lost
                    self.skipped += 1
                    continue
                buf[n] = byte
                n += 1
            self._n = n

    def _drop(self, count):
        # Remove `count` bytes from the front of the buffer (no allocation).
        buf = self._buf
        rest = self._n - count
        for i in range(rest):
            buf[i] = buf[count + i]
        self._n = rest

    def poll(self):
        """Parse at most one frame from the bytes received so far.

        Returns True when a new reading was stored on the driver. Call it
        again while it returns True to drain frames that arrived together.
        """
        self._fill()
        buf = self._buf
        head = self.HEAD
        # Bounded: every pass drops at least one byte, reads more, or returns.
        for _ in range(4 * len(buf)):
            n = self._n
            if n == 0:
                self._fill()
                n = self._n
                if n == 0:
                    return False
            if buf[0] != head:
                i = 1
                while i < n and buf[i] != head:
                    i += 1
                self.skipped += i
                self._drop(i)
                continue
            length = self._frame_len(buf, n)  # type: ignore[attr-defined]  # a subclass's
            if length == NOT_HEAD:
                self.skipped += 1
                self._drop(1)
                continue
            if length == BAD:
                self.bad_frames += 1
                self.skipped += 1
                self._drop(1)
                continue
            if length == 0 or n < length:
                if n == len(buf):
                    # Cannot happen with a buffer longer than any frame; be safe.
                    self.bad_frames += 1
                    self.skipped += 1
                    self._drop(1)
                    continue
                self._fill()
                if self._n == n:
                    return False
                continue
            result = self._check(buf, length)  # type: ignore[attr-defined]  # a subclass's
            if result == BAD:
                self.bad_frames += 1
                self.skipped += 1
                self._drop(1)
                continue
            self._drop(length)
            if result == DATA:
                self.frames += 1
                return True
            self.replies += 1
        return False

    def flush(self):
        """Forget buffered bytes and whatever the UART holds (after a wake-up)."""
        self._n = 0
        for _ in range(8):
            if not self._uart.any():
                break
            self._uart.read(len(self._buf))

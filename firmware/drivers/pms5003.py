# Plantower PMS5003 laser particle sensor over UART (9600 baud, 8N1).
#
# Reference: Plantower PMS5003 data manual, "Appendix I: PMS5003 transport
# protocol - Active Mode" and "Appendix II: PMS5003 transport protocol -
# Passive Mode".
#
# Data frame (32 bytes, every field big-endian):
#   0x42 0x4D | frame length = 2*13+2 = 28 | data1..data13 | check code
#   data1..3  PM1.0, PM2.5, PM10 in ug/m3, CF=1 ("standard particle")
#   data4..6  PM1.0, PM2.5, PM10 in ug/m3, atmospheric environment
#   data7..12 particle counts per 0.1 L (>0.3, 0.5, 1.0, 2.5, 5.0, 10 um)
#   check code = 16-bit sum of every byte before it
# Host commands (7 bytes): 0x42 0x4D cmd dataH dataL LRCH LRCL, LRC = 16-bit
# sum of the first five bytes:
#   0xE2 0x0000  read one frame (passive mode)
#   0xE1 0x0000  passive mode, 0x0001 active mode
#   0xE4 0x0000  sleep, 0x0001 wake up
# Mode and sleep commands are answered with an 8-byte frame of length 4
# (0x42 0x4D 0x00 0x04 cmd data check-code); it is counted as a reply.
# The manual asks for at least 30 s after wake-up before the data is stable
# (fan), which is the role's default warm-up.
#
# Readings are stored in 0.1 ug/m3 (the sensor's whole ug/m3 times 10), the
# atmospheric-environment values unless the driver is built with cf1=True.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from firmware.drivers.uartframe import BAD, DATA, NOT_HEAD, REPLY, FrameReader

_HEAD0 = const(0x42)
_HEAD1 = const(0x4D)
_DATA_BODY = const(28)          # frame length field of a data frame
_REPLY_BODY = const(4)          # frame length field of a command reply
_CMD_LEN = const(7)

_CMD_READ = const(0xE2)
_CMD_MODE = const(0xE1)
_CMD_SLEEP = const(0xE4)


class PMS5003(FrameReader):
    HEAD = _HEAD0

    def __init__(self, uart, cf1=False):
        FrameReader.__init__(self, uart, 64)
        self._cmd = bytearray(_CMD_LEN)
        # Offset of the PM1.0 field: data1 (CF=1) at 4 or data4 (atmospheric) at 10
        self._pm_at = 4 if cf1 else 10
        self.pm1 = None            # 0.1 ug/m3
        self.pm2_5 = None
        self.pm10 = None
        self.last_reply = None     # command byte of the last reply frame

    def _frame_len(self, buf, n):
        if n >= 2 and buf[1] != _HEAD1:
            return NOT_HEAD
        if n < 4:
            return 0
        if buf[2] != 0:
            return BAD
        body = buf[3]
        if body in (_DATA_BODY, _REPLY_BODY):
            return 4 + body
        return BAD

    def _check(self, buf, length):
        total = 0
        for i in range(length - 2):
            total += buf[i]
        if total & 0xFFFF != (buf[length - 2] << 8) | buf[length - 1]:
            return BAD
        if length == 4 + _REPLY_BODY:
            self.last_reply = buf[4]
            return REPLY
        at = self._pm_at
        self.pm1 = ((buf[at] << 8) | buf[at + 1]) * 10
        self.pm2_5 = ((buf[at + 2] << 8) | buf[at + 3]) * 10
        self.pm10 = ((buf[at + 4] << 8) | buf[at + 5]) * 10
        return DATA

    def _command(self, cmd, data):
        frame = self._cmd
        frame[0] = _HEAD0
        frame[1] = _HEAD1
        frame[2] = cmd
        frame[3] = 0
        frame[4] = data
        total = _HEAD0 + _HEAD1 + cmd + data
        frame[5] = (total >> 8) & 0xFF
        frame[6] = total & 0xFF
        self._uart.write(frame)

    def sleep(self):
        """Stop the fan (command 0xE4, data 0)."""
        self._command(_CMD_SLEEP, 0)

    def wake(self):
        """Start the fan (command 0xE4, data 1)."""
        self._command(_CMD_SLEEP, 1)

    def set_active(self):
        """Send data frames without being asked (command 0xE1, data 1)."""
        self._command(_CMD_MODE, 1)

    def set_passive(self):
        """Send a data frame only when asked with request() (command 0xE1, data 0)."""
        self._command(_CMD_MODE, 0)

    def request(self):
        """Ask for one data frame in passive mode (command 0xE2)."""
        self._command(_CMD_READ, 0)

# Nova Fitness SDS011 laser particle sensor over UART (9600 baud, 8N1).
#
# References: "SDS011 Laser PM2.5 Sensor specification" V1.3 and "Laser Dust
# Sensor Control Protocol" V1.3 (Nova Fitness), sections cited below.
#
# Data frame the sensor sends once a second in active report mode
# (specification, "UART communication protocol"):
#   0     1     2       3       4      5      6    7    8         9
#   0xAA  0xC0  PM2.5L  PM2.5H  PM10L  PM10H  ID1  ID2  checksum  0xAB
#   PM values are little-endian in 0.1 ug/m3; checksum = (sum of bytes 2..7) & 0xFF.
# Reply frames (control protocol, every command's reply) have the same shape
# with 0xC5 as byte 1 and the command number in byte 2.
# Command frames (control protocol, 19 bytes):
#   0xAA 0xB4 cmd data1..data12 ID1 ID2 checksum 0xAB
#   ID 0xFFFF addresses every sensor; checksum = (sum of bytes 2..16) & 0xFF.
#
# The SDS011 gives no PM1 value; pm1 stays None.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from firmware.drivers.uartframe import BAD, DATA, NOT_HEAD, REPLY, FrameReader

_HEAD = const(0xAA)
_TAIL = const(0xAB)
_DATA = const(0xC0)
_REPLY = const(0xC5)
_CMD = const(0xB4)
_FRAME_LEN = const(10)
_CMD_LEN = const(19)

# Command numbers (control protocol sections 1..7)
_CMD_REPORT_MODE = const(2)     # data1 1=set, data2 0=active 1=query
_CMD_QUERY = const(4)           # ask for one data frame (query report mode)
_CMD_SLEEP_WORK = const(6)      # data1 1=set, data2 0=sleep 1=work
_CMD_PERIOD = const(8)          # data1 1=set, data2 minutes, 0=continuous


class SDS011(FrameReader):
    HEAD = _HEAD

    def __init__(self, uart):
        FrameReader.__init__(self, uart, 32)
        self._cmd = bytearray(_CMD_LEN)
        self.pm1 = None
        self.pm2_5 = None          # 0.1 ug/m3
        self.pm10 = None           # 0.1 ug/m3
        self.working = None        # from the last sleep/work reply: True, False, None unknown

    def _frame_len(self, buf, n):
        if n < 2:
            return 0
        kind = buf[1]
        if kind in (_DATA, _REPLY):
            return _FRAME_LEN
        return NOT_HEAD

    def _check(self, buf, length):
        if buf[9] != _TAIL:
            return BAD
        total = 0
        for i in range(2, 8):
            total += buf[i]
        if total & 0xFF != buf[8]:
            return BAD
        if buf[1] == _DATA:
            self.pm2_5 = buf[2] | (buf[3] << 8)
            self.pm10 = buf[4] | (buf[5] << 8)
            return DATA
        if buf[2] == _CMD_SLEEP_WORK:
            self.working = buf[4] == 1
        return REPLY

    def _command(self, cmd, data1, data2):
        # Build and send one 19-byte command frame to every sensor (ID 0xFFFF).
        frame = self._cmd
        for i in range(_CMD_LEN):
            frame[i] = 0
        frame[0] = _HEAD
        frame[1] = _CMD
        frame[2] = cmd
        frame[3] = data1
        frame[4] = data2
        frame[15] = 0xFF
        frame[16] = 0xFF
        total = 0
        for i in range(2, 17):
            total += frame[i]
        frame[17] = total & 0xFF
        frame[18] = _TAIL
        self._uart.write(frame)

    def sleep(self):
        """Stop the fan and laser (control protocol: set sleep and work, sleep)."""
        self._command(_CMD_SLEEP_WORK, 1, 0)

    def wake(self):
        """Start the fan and laser (control protocol: set sleep and work, work)."""
        self._command(_CMD_SLEEP_WORK, 1, 1)

    def set_active(self):
        """Report a data frame every second without being asked."""
        self._command(_CMD_REPORT_MODE, 1, 0)

    def set_query(self):
        """Report data only when asked with query()."""
        self._command(_CMD_REPORT_MODE, 1, 1)

    def set_continuous(self):
        """Working period 0: measure continuously while awake."""
        self._command(_CMD_PERIOD, 1, 0)

    def query(self):
        """Ask for one data frame (query report mode)."""
        self._command(_CMD_QUERY, 0, 0)

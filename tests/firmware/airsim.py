# Sensor stand-ins for the air-quality tests: frame and register-image
# builders written from the data sheets, independently of the drivers, and
# simulated SDS011/PMS5003 sensors that obey sleep/wake commands.
# Runs on CPython and on the MicroPython unix port (upy_air_suite.py uses it):
# annotations only on functions and attributes, which MicroPython never evaluates.

import struct

try:
    from collections.abc import Callable
    from typing import Any
except ImportError:   # MicroPython: the names only appear in annotations
    pass

# BMP280 data sheet section 3.12 (the same trimming layout and T/P formulas as
# the BME280): its worked example gives adc_T 519888 -> 25.08 degC (t_fine
# 128422) and adc_P 415148 -> 100653.27 Pa. The BME280 data sheet has no
# humidity example; H1..H6 are values typical of production parts.
EXAMPLE_CALIB = {
    "t1": 27504, "t2": 26435, "t3": -1000,
    "p1": 36477, "p2": -10685, "p3": 3024, "p4": 2855, "p5": 140,
    "p6": -7, "p7": 15500, "p8": -14600, "p9": 6000,
    "h1": 75, "h2": 362, "h3": 0, "h4": 313, "h5": 50, "h6": 30,
}
EXAMPLE_ADC_T = 519888
EXAMPLE_ADC_P = 415148


def calib_blocks(cal: "dict[str, int]") -> "tuple[bytes, bytes]":
    """Registers 0x88..0xA1 (26 bytes) and 0xE1..0xE7 (7 bytes) for a calibration dict.

    Layout from BME280 data sheet table 16; H4 and H5 are 12-bit values
    sharing register 0xE5.
    """
    block0 = struct.pack("<HhhHhhhhhhhhBB", cal["t1"], cal["t2"], cal["t3"],
                         cal["p1"], cal["p2"], cal["p3"], cal["p4"], cal["p5"],
                         cal["p6"], cal["p7"], cal["p8"], cal["p9"], 0, cal["h1"])
    h4 = cal["h4"] & 0xFFF
    h5 = cal["h5"] & 0xFFF
    block1 = struct.pack("<hBBBBb", cal["h2"], cal["h3"], h4 >> 4,
                         (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4, cal["h6"])
    return block0, block1


def data_block(adc_t: int, adc_p: int, adc_h: int) -> bytes:
    """Registers 0xF7..0xFE: press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb."""
    return bytes([(adc_p >> 12) & 0xFF, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
                  (adc_t >> 12) & 0xFF, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
                  (adc_h >> 8) & 0xFF, adc_h & 0xFF])


def _hex_line(reg: int, data: bytes) -> str:
    return f"{reg:02X}: " + " ".join([f"{b:02X}" for b in data])


def bme280_image(cal: "dict[str, int]", adc_t: int, adc_p: int, adc_h: int,
                 addr: int = 0x76, chip_id: int = 0x60) -> str:
    """A register-image file text for a BME280 holding one finished measurement."""
    block0, block1 = calib_blocks(cal)
    return "\n".join([
        "# BME280 test image",
        f"device {addr:02X}",
        _hex_line(0x88, block0[:16]),
        _hex_line(0x98, block0[16:]),
        _hex_line(0xD0, bytes([chip_id])),
        _hex_line(0xE1, block1),
        _hex_line(0xF7, data_block(adc_t, adc_p, adc_h)),
    ]) + "\n"


# --- particle sensor frames (written from the data sheets) ---------------

def sds011_frame(pm2_5: int, pm10: int, dev_id: int = 0xA1B2, kind: int = 0xC0) -> bytes:
    """SDS011 data frame; pm values in 0.1 ug/m3."""
    body = bytes([pm2_5 & 0xFF, pm2_5 >> 8, pm10 & 0xFF, pm10 >> 8,
                  dev_id >> 8, dev_id & 0xFF])
    return bytes([0xAA, kind]) + body + bytes([sum(body) & 0xFF, 0xAB])


def sds011_reply(cmd: int, data1: int, data2: int, dev_id: int = 0xA1B2) -> bytes:
    """SDS011 reply frame (0xC5) to a command."""
    body = bytes([cmd, data1, data2, 0, dev_id >> 8, dev_id & 0xFF])
    return bytes([0xAA, 0xC5]) + body + bytes([sum(body) & 0xFF, 0xAB])


def pms5003_frame(pm1: int, pm2_5: int, pm10: int, std: "tuple[int, ...] | None" = None,
                  counts: "tuple[int, ...]" = (0, 0, 0, 0, 0, 0)) -> bytes:
    """PMS5003 data frame; atmospheric values in whole ug/m3, CF=1 values `std`."""
    if std is None:
        std = (pm1, pm2_5, pm10)
    fields = list(std) + [pm1, pm2_5, pm10] + list(counts) + [0]  # noqa: RUF005 (MicroPython)
    head = struct.pack(">BBH", 0x42, 0x4D, 28)
    body = b"".join([struct.pack(">H", v) for v in fields])
    return head + body + struct.pack(">H", (sum(head) + sum(body)) & 0xFFFF)


def pms5003_reply(cmd: int, data: int) -> bytes:
    """PMS5003 answer to a mode or sleep command (frame length 4)."""
    head = bytes([0x42, 0x4D, 0x00, 0x04, cmd, data])
    return head + struct.pack(">H", sum(head))


# --- UARTs ------------------------------------------------------------------

class ByteUart:
    """machine.UART stand-in: bytes fed in are read out, writes are logged.

    `chunk` limits how many bytes one read() returns (split delivery).
    """

    def __init__(self, chunk: int = 0) -> None:
        self.rx = bytearray()
        self.tx: list[bytes] = []
        self.chunk = chunk

    def feed(self, data: bytes) -> None:
        self.rx.extend(data)

    def any(self) -> int:
        return len(self.rx)

    def read(self, n: int = -1) -> "bytes | None":
        if n < 0 or n > len(self.rx):
            n = len(self.rx)
        if self.chunk and n > self.chunk:
            n = self.chunk
        if n == 0:
            return None
        data = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return data

    def write(self, buf: bytes) -> int:
        self.tx.append(bytes(buf))
        return len(buf)


class SimSDS011(ByteUart):
    """An SDS011 that obeys sleep/work commands and reports once a second while working.

    `reading(t_ms)` gives (pm2_5, pm10) in 0.1 ug/m3 for a frame sent at t_ms.
    `deaf` wake commands are ignored first (a sensor that misses commands).
    """

    def __init__(self, reading: "Callable[[int], tuple[int, int]] | None",
                 working: bool = False, deaf: int = 0, garbage: bytes = b"") -> None:
        ByteUart.__init__(self)
        self.reading = reading
        self.working = working
        self.deaf = deaf
        self.garbage = garbage
        self.next_ms: int | None = None
        self.now = 0
        self.woke_at = 0          # when the fan last started
        self.on_ms = 0            # fan running time so far
        self.commands: list[tuple[int, int, int]] = []
        self.sent = 0

    def _set_working(self, working: bool) -> None:
        if working and not self.working:
            self.woke_at = self.now
        self.working = working

    def write(self, buf: bytes) -> int:
        ByteUart.write(self, buf)
        frame = bytes(buf)
        if len(frame) != 19 or frame[0] != 0xAA or frame[1] != 0xB4 or frame[18] != 0xAB:
            return len(buf)
        if sum(frame[2:17]) & 0xFF != frame[17]:
            return len(buf)
        cmd, d1, d2 = frame[2], frame[3], frame[4]
        self.commands.append((cmd, d1, d2))
        if cmd == 6 and d1 == 1:
            if d2 == 1 and self.deaf > 0:
                self.deaf -= 1
                return len(buf)
            self._set_working(d2 == 1)
        if self.working or (cmd == 6 and d1 == 1):
            self.feed(sds011_reply(cmd, d1, d2))
        return len(buf)

    def tick(self, t_ms: int) -> None:
        """Emit the frames due by t_ms."""
        if self.working:
            self.on_ms += t_ms - self.now
        self.now = t_ms
        if not self.working:
            self.next_ms = None
            return
        if self.next_ms is None:
            self.next_ms = t_ms + 1000
        while self.next_ms <= t_ms:
            assert self.reading is not None
            pm2_5, pm10 = self.reading(self.next_ms)
            self.feed(self.garbage + sds011_frame(pm2_5, pm10))
            self.sent += 1
            self.next_ms += 1000


class SimPMS5003(ByteUart):
    """A PMS5003 obeying sleep/wake and mode commands; active frames every second.

    `reading(t_ms)` gives (pm1, pm2_5, pm10) in whole ug/m3.
    """

    def __init__(self, reading: "Callable[[int], tuple[int, int, int]]",
                 working: bool = False) -> None:
        ByteUart.__init__(self)
        self.reading = reading
        self.working = working
        self.active = True
        self.next_ms: int | None = None
        self.now = 0
        self.woke_at = 0
        self.on_ms = 0
        self.commands: list[tuple[int, int]] = []
        self.sent = 0

    def write(self, buf: bytes) -> int:
        ByteUart.write(self, buf)
        frame = bytes(buf)
        if len(frame) != 7 or frame[0] != 0x42 or frame[1] != 0x4D:
            return len(buf)
        if sum(frame[:5]) != (frame[5] << 8) | frame[6]:
            return len(buf)
        cmd, data = frame[2], frame[4]
        self.commands.append((cmd, data))
        if cmd == 0xE4:
            if data == 1 and not self.working:
                self.woke_at = self.now
            self.working = data == 1
            self.feed(pms5003_reply(cmd, data))
        elif cmd == 0xE1 and self.working:
            self.active = data == 1
            self.feed(pms5003_reply(cmd, data))
        elif cmd == 0xE2 and self.working and not self.active:
            self._emit(self.now)
        return len(buf)

    def _emit(self, t_ms: int) -> None:
        pm1, pm2_5, pm10 = self.reading(t_ms)
        self.feed(pms5003_frame(pm1, pm2_5, pm10))
        self.sent += 1

    def tick(self, t_ms: int) -> None:
        """Emit the frames due by t_ms (active mode)."""
        if self.working:
            self.on_ms += t_ms - self.now
        self.now = t_ms
        if not self.working or not self.active:
            self.next_ms = None
            return
        if self.next_ms is None:
            self.next_ms = t_ms + 1000
        while self.next_ms <= t_ms:
            self._emit(self.next_ms)
            self.next_ms += 1000


# --- a Context stand-in for the role ----------------------------------------

class FakeHal:
    """The HAL subset the air role uses: one particle UART, one I2C bus."""

    TICKS_PERIOD = 1 << 30          # ticks_ms() wraps here on the ports
    # 2**30 itself is no small int on a 32-bit build (they stop at 2**30 - 1): an
    # expression with it makes a heap integer there. ticks_diff works with the
    # mask and the half period only, as time.ticks_diff does in C.
    TICKS_MASK = 0x3FFFFFFF
    TICKS_HALF = 0x20000000

    def __init__(self, uart: "Any", i2c: "Any") -> None:
        self._uart = uart
        self._i2c = i2c
        self.opened: list[tuple[Any, ...]] = []

    def ticks_diff(self, new: int, old: int) -> int:
        # new and old are ticks (0 .. 2**30 - 1): their difference and every
        # intermediate stay within the 32-bit small ints (-2**30 .. 2**30 - 1).
        diff = (new - old) & self.TICKS_MASK
        if diff >= self.TICKS_HALF:
            return diff - self.TICKS_MASK - 1
        return diff

    def uart(self, name: str, baud: int = 115200) -> "Any":
        self.opened.append(("uart", name, baud))
        return self._uart

    def i2c(self, name: str) -> "Any":
        self.opened.append(("i2c", name))
        return self._i2c


class FakeCtx:
    """Collects what the role sends and logs."""

    def __init__(self, air: "Any", uart: "Any", i2c: "Any") -> None:
        from firmware.config import air_section

        # checked and completed as firmware.config does at boot
        self.config = {"role": "air_quality", "air": air_section(air)}
        self.hal = FakeHal(uart, i2c)
        self.duty = None            # a wired node: no duty cycle, no send phase
        self.device_id = 0
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.lines: list[str] = []
        self.accept = True
        self.now = 0

    def send(self, values: "dict[str, Any]") -> bool:
        self.sent.append((self.now, values))
        return self.accept

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def simulate(node: "Any", sensor: "Any", ctx: FakeCtx, start_ms: int, end_ms: int,
             max_step_ms: int = 1000, tick_base: int = 0) -> int:
    """Drive node.poll() and the sensor's clock from start_ms to end_ms; returns the end time.

    Time jumps to whatever the role asks for (capped at max_step_ms so the
    sensor's frames come on time). The role sees ticks (tick_base + time)
    wrapped like ticks_ms(). Bounded: at most 1 + (end-start) loops.
    """
    now = start_ms
    for _ in range(end_ms - start_ms + 1):
        if now >= end_ms:
            break
        if sensor is not None:
            sensor.tick(now)
        ctx.now = now
        wait = node.poll((tick_base + now) & FakeHal.TICKS_MASK)
        step = wait if wait < max_step_ms else max_step_ms
        now += step if step > 0 else 1
    return now

"""Sensor stand-ins for bench nodes on the unix port: an SDS011 on a pty, a BME280 image.

``BenchSDS011`` answers a node's sleep/work commands on a pty master and sends
data frames (SDS011 data sheet v1.3, "Serial communication protocol") while
working: wild readings for its first 0.5 s after waking (the fan spinning up),
every fourth frame a checksum error. ``bme280_image`` is a register-image file
(firmware.drivers.regimage, the bench I2C bus) of a BME280 holding one finished
measurement, laid out from the BME280 data sheet (table 16, section 5.4).
Written from the data sheets, independently of the drivers they feed.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import threading
import time

SLEEP, WORK = (6, 1, 0), (6, 1, 1)

# BMP280 data sheet section 3.12 (the same trimming layout and T/P formulas as
# the BME280): adc_T 519888 -> 25.08 degC and adc_P 415148 -> 100653.27 Pa.
# H1..H6 are values typical of production parts.
# tests/firmware/airsim.py holds the same values: it also runs on the MicroPython
# unix port, where knute.tools cannot be imported, and shipped code imports no tests.
EXAMPLE_CALIB = {
    "t1": 27504, "t2": 26435, "t3": -1000,
    "p1": 36477, "p2": -10685, "p3": 3024, "p4": 2855, "p5": 140,
    "p6": -7, "p7": 15500, "p8": -14600, "p9": 6000,
    "h1": 75, "h2": 362, "h3": 0, "h4": 313, "h5": 50, "h6": 30,
}
EXAMPLE_ADC_T = 519888
EXAMPLE_ADC_P = 415148


def sds011_frame(pm2_5: int, pm10: int, dev_id: int = 0xA1B2) -> bytes:
    """One SDS011 data frame (AA C0 ... AB); pm values in 0.1 ug/m3."""
    body = bytes([pm2_5 & 0xFF, pm2_5 >> 8, pm10 & 0xFF, pm10 >> 8,
                  dev_id >> 8, dev_id & 0xFF])
    return bytes([0xAA, 0xC0]) + body + bytes([sum(body) & 0xFF, 0xAB])


def _line(reg: int, data: bytes) -> str:
    return f"{reg:02X}: " + " ".join(f"{b:02X}" for b in data)


def bme280_image(cal: dict[str, int], adc_t: int, adc_p: int, adc_h: int,
                 addr: int = 0x76) -> str:
    """A register-image file text for a BME280 (chip id 0x60) holding one measurement."""
    calib0 = struct.pack("<HhhHhhhhhhhhBB", cal["t1"], cal["t2"], cal["t3"],
                         cal["p1"], cal["p2"], cal["p3"], cal["p4"], cal["p5"],
                         cal["p6"], cal["p7"], cal["p8"], cal["p9"], 0, cal["h1"])
    h4, h5 = cal["h4"] & 0xFFF, cal["h5"] & 0xFFF
    calib1 = struct.pack("<hBBBBb", cal["h2"], cal["h3"], h4 >> 4,
                         (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4, cal["h6"])
    data = bytes([(adc_p >> 12) & 0xFF, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
                  (adc_t >> 12) & 0xFF, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
                  (adc_h >> 8) & 0xFF, adc_h & 0xFF])
    return "\n".join([
        "# BME280 bench image", f"device {addr:02X}",
        _line(0x88, calib0[:16]), _line(0x98, calib0[16:]), _line(0xD0, b"\x60"),
        _line(0xE1, calib1), _line(0xF7, data),
    ]) + "\n"


def example_bme280_image() -> str:
    """The data sheet's example measurement (25.08 degC, 1006.53 hPa) at 30000 humidity."""
    return bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000)


class BenchSDS011:
    """An SDS011 on a pty master: obeys sleep/work, one frame per 0.1 s while working."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.working = True
        self.woke_at = time.monotonic()
        self.commands: list[tuple[int, int, int]] = []
        self.sent = 0
        self.bad_sent = 0
        self._rx = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sds011", daemon=True)
        self._thread.start()

    def _commands(self) -> None:
        # 19-byte command frames: AA B4 cmd data1..12 id id checksum AB
        while len(self._rx) >= 19:
            start = self._rx.find(b"\xaa\xb4")
            if start < 0:
                self._rx.clear()
                return
            del self._rx[:start]
            if len(self._rx) < 19:
                return
            cmd = bytes(self._rx[:19])
            del self._rx[:19]
            if cmd[18] != 0xAB or sum(cmd[2:17]) & 0xFF != cmd[17]:
                continue
            item = (cmd[2], cmd[3], cmd[4])
            self.commands.append(item)
            if item == WORK and not self.working:
                self.working = True
                self.woke_at = time.monotonic()
            elif item == SLEEP:
                self.working = False

    def _run(self) -> None:
        next_frame = time.monotonic()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.01)
            if ready:
                try:
                    self._rx.extend(os.read(self.master, 1024))
                except OSError:
                    time.sleep(0.01)
                self._commands()
            now = time.monotonic()
            if now < next_frame:
                continue
            next_frame = now + 0.1
            if not self.working:
                continue
            if now - self.woke_at < 0.5:
                data = sds011_frame(9999, 9999)              # fan spinning up
            else:
                data = sds011_frame(123, 456)
                if self.sent % 4 == 3:                     # every 4th: a checksum error
                    bad = bytearray(sds011_frame(800, 800))
                    bad[8] ^= 0x5A
                    data = bytes(bad) + b"\x00\xff" + data
                    self.bad_sent += 1
            self.sent += 1
            with contextlib.suppress(OSError):
                os.write(self.master, data)

    def stop(self) -> None:
        """End the thread and close the master."""
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)

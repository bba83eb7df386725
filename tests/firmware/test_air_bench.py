"""The air_quality node on the MicroPython unix port, end to end.

An SDS011 stand-in thread answers the node's sleep/work commands on a pty and
sends data frames (some corrupted) while working; a BME280 register image
file is the bench I2C bus (firmware.drivers.regimage); the node's frames are read from its link pty
and decoded on CPython with protocol.frame.decode.

Time runs 10x (bench time_scale): an interval of 50 simulated seconds takes
5 real seconds. The stand-in's frames come every 0.1 real s (1 simulated s,
as a real SDS011), wild for its first 0.5 real s after waking (5 simulated s),
well inside the node's 20 simulated s warm-up.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path
from typing import Any

from knute.tools.rig.node import KEY_HEX
from knute.tools.rig.ptys import open_pty
from tests.firmware.airsim import EXAMPLE_ADC_P, EXAMPLE_ADC_T, EXAMPLE_CALIB, bme280_image
from tests.firmware.airsim import sds011_frame as make_frame
from tests.firmware.conftest import NodeFactory

SLEEP, WORK = (6, 1, 0), (6, 1, 1)


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
                data = make_frame(9999, 9999)              # fan spinning up
            else:
                data = make_frame(123, 456)
                if self.sent % 4 == 3:                     # every 4th: a checksum error
                    bad = bytearray(make_frame(800, 800))
                    bad[8] ^= 0x5A
                    data = bytes(bad) + b"\x00\xff" + data
                    self.bad_sent += 1
            self.sent += 1
            with contextlib.suppress(OSError):
                os.write(self.master, data)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)


def test_air_node_sends_averaged_frames_over_the_link(bench_node: NodeFactory,
                                                      tmp_path: Path) -> None:
    master, pm_path = open_pty()
    sensor = BenchSDS011(master)
    try:
        image = tmp_path / "bme280.img"
        image.write_text(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000))
        config: dict[str, Any] = {
            "role": "air_quality", "device_id": 4242, "key": KEY_HEX,
            "link": {"type": "uart", "uart": "link"}, "board": "unix", "jitter_s": 0,
            "air": {"pm_sensor": "sds011", "interval_s": 50, "warmup_s": 20, "sample_s": 20,
                    "climate_every_s": 10, "bad_frames_max": 2},
            "bench": {"uart": {"pm": pm_path}, "i2c": {"i2c0": str(image)},
                      "time_scale": 10, "stop_after_s": 100, "seed": 3},
        }
        # Downlinks on (the default): the bench rule's heap, the smallest supported
        # board's. Without them the air node holds about 58 KB after boot on the
        # 64-bit unix port (docs/firmware.md, "Memory";
        # tests/firmware/test_downlink_off_margin.py runs it in 64 KiB).
        node = bench_node(config)
        node.start()
        assert node.wait() == 0, node.console()
        frames = node.frames()
    finally:
        sensor.stop()
    # Frames at 40 s (one window after boot) and 90 s (simulated).
    assert len(frames) == 2, node.console()
    for number, decoded in enumerate(frames):
        assert decoded["kind"] == "air_quality"
        assert decoded["device_id"] == 4242 and decoded["fcnt"] == number
        values = decoded["values"]
        # Warm-up frames (999.9 ug/m3) discarded; the steady 12.3/45.6 kept.
        assert (values["pm1"], values["pm2_5"], values["pm10"]) == (None, 123, 456)
        # 25.08 degC, 1006.56 hPa from the data sheet example trimming.
        assert values["temperature"] == 251
        assert values["pressure"] == 10066
        assert 0 <= values["humidity"] <= 100
        assert values["status"] == 2              # pm_bad_frames: about 5 bad frames a window
    # The fan was put to sleep after the first frame and woken for the second window.
    assert SLEEP in sensor.commands
    first_sleep = sensor.commands.index(SLEEP)
    assert WORK in sensor.commands[first_sleep:]
    assert sensor.bad_sent >= 4

"""The air_quality node on the MicroPython unix port, end to end.

An SDS011 stand-in thread (knute.tools.rig.sensors) answers the node's
sleep/work commands on a pty and sends data frames (some corrupted) while
working; a BME280 register image file is the bench I2C bus
(firmware.drivers.regimage); the node's frames are read from its link pty
and decoded on CPython with protocol.frame.decode.

Time runs 10x (bench time_scale): an interval of 50 simulated seconds takes
5 real seconds. The stand-in's frames come every 0.1 real s (1 simulated s,
as a real SDS011), wild for its first 0.5 real s after waking (5 simulated s),
well inside the node's 20 simulated s warm-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knute.tools.rig.node import KEY_HEX
from knute.tools.rig.ptys import open_pty
from knute.tools.rig.sensors import SLEEP, WORK, BenchSDS011
from tests.firmware.airsim import EXAMPLE_ADC_P, EXAMPLE_ADC_T, EXAMPLE_CALIB, bme280_image
from tests.firmware.conftest import NodeFactory


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

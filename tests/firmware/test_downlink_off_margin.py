"""The project's heap margin without downlinks, for each role that sends uplinks.

Downlinks are on by default (they need the heap of a real board:
knute.tools.board_heap), so bench nodes with them on run in the smallest
supported board's heap. With ``"downlink": false`` every role still boots and
sends in the project's own margin: 64 KiB on the 64-bit unix port, 48 KiB on
the 32-bit build (docs/firmware.md, "Memory").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knute.protocol import frame
from knute.tools.board_heap import MARGIN_HEAP, bench_heap
from knute.tools.rig.node import HOUR_T0, KEY, KEY_HEX, pulse_lines, water_config
from knute.tools.rig.ptys import open_pty
from knute.tools.rig.sensors import BenchSDS011
from tests.firmware.airsim import EXAMPLE_ADC_P, EXAMPLE_ADC_T, EXAMPLE_CALIB, bme280_image
from tests.firmware.conftest import NodeFactory

WAIT_S = 60.0


def _frames(node: Any, count: int) -> list[dict[str, Any]]:
    """The node's first ``count`` frames or more, waiting for them (BenchNode.link_frame
    reads the pty to its end once the node has exited, as on the stepped clock right
    after its last send)."""
    node.link_frame(count - 1, WAIT_S)
    frames: list[dict[str, Any]] = node.frames()
    return frames


def test_the_default_turns_downlinks_on_and_the_bench_gives_a_board_heap(
        bench_node: NodeFactory, upy_bits: int) -> None:
    on = bench_node(water_config(sends_per_day=24, profile_len=1), name="on")
    off = bench_node(dict(water_config(sends_per_day=24, profile_len=1), downlink=False),
                     name="off")
    assert on.heap == bench_heap({"role": "water_meter"}, upy_bits)
    assert off.heap == MARGIN_HEAP[upy_bits]


def test_serial_water_meter_without_downlinks_runs_in_the_margin(
        bench_node: NodeFactory, upy_bits: int) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = False
    # The stepped clock (time_scale 0): nothing here answers in real time, and the
    # hours between the sends cost no real time (a second each at 3600x).
    cfg["bench"].update({"time_scale": 0, "stop_after_s": 3 * 3600})
    node = bench_node(cfg, heap=MARGIN_HEAP[upy_bits])
    node.start()
    frames = _frames(node, 2)
    assert all("dl" not in each["values"] for each in frames), frames
    node.wait_line("free after boot")


def test_lora_water_meter_without_downlinks_runs_in_the_margin(
        bench_node: NodeFactory, upy_bits: int) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = False
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"sf": 9}
    cfg["send_phase_s"] = 0
    cfg["bench"].update({"radio": {"path": "air.txt"}, "stop_after_s": 3 * 3600 + 600})
    node = bench_node(cfg, heap=MARGIN_HEAP[upy_bits])
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [3] * 4, 6))
    node.start()
    assert node.wait() == 0, node.console()
    lines = (node.dir / "air.txt").read_text().splitlines()
    assert len(lines) == 3, node.console()
    sent = [frame.decode(bytes.fromhex(line.split()[3]), KEY) for line in lines]
    assert all("dl" not in each["values"] for each in sent), sent
    assert "free after boot" in node.console()


def test_air_node_without_downlinks_runs_in_the_margin(
        bench_node: NodeFactory, upy_bits: int, tmp_path: Path) -> None:
    master, pm_path = open_pty()
    sensor = BenchSDS011(master)
    try:
        image = tmp_path / "bme280.img"
        image.write_text(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000))
        cfg: dict[str, Any] = {
            "role": "air_quality", "device_id": 4660, "key": KEY_HEX, "downlink": False,
            "link": {"type": "uart", "uart": "link"}, "board": "unix", "jitter_s": 0,
            "air": {"pm_sensor": "sds011", "interval_s": 50, "warmup_s": 20, "sample_s": 20,
                    "climate_every_s": 10},
            "bench": {"uart": {"pm": pm_path}, "i2c": {"i2c0": str(image)},
                      "time_scale": 10, "stop_after_s": 1000, "seed": 3},
        }
        node = bench_node(cfg, heap=MARGIN_HEAP[upy_bits])
        node.start()
        frames = _frames(node, 2)
        assert all("dl" not in each["values"] for each in frames), frames
        node.wait_line("free after boot")
    finally:
        sensor.stop()

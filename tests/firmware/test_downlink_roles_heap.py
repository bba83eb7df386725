"""What the downlink path costs each role with an uplink, and the heap it runs in.

The serial water meter, the LoRa water meter and the air node on either link
each boot with ``downlink`` on, send, listen in their receive windows, apply a
downlink by the restart in place and send again with the report of it. Every
role does so in the project's 64 KiB on the 32-bit build (a board's word
size), and the serial water meter on the 64-bit port too; the LoRa water meter
and the air node do not fit 64 KiB on the 64-bit port yet and run in their
measured need there (docs/firmware.md, "The downlink path's heap", says where
they run out). A node that meets a MemoryError anywhere fails its test. The
heap figures each node prints (after boot, after its first send, after the
apply and after the next boot) are printed for that table: a benchmark, not a
limit.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from knute.protocol import downlink as dl
from knute.protocol import frame, stream
from knute.tools.board_heap import DOWNLINK_NEED_KIB
from knute.tools.rig.node import KEY, KEY_HEX, water_config
from knute.tools.rig.ptys import open_pty
from tests.firmware.airsim import EXAMPLE_ADC_P, EXAMPLE_ADC_T, EXAMPLE_CALIB, bme280_image
from tests.firmware.conftest import NodeFactory
from tests.firmware.test_air_bench import BenchSDS011
from tests.firmware.test_node_downlink import DEVICE, RX_WAIT_REAL_MS, STOP_AFTER_S, Air

WAIT_S = 60.0
# The heap each run gets: the project's 64 KiB on both builds, except where the
# 64-bit port's downlink path does not fit it yet (the LoRa water meter and the
# air node), which run in their measured need there (knute.tools.board_heap,
# the table `knute provision` checks a board against; docs/firmware.md says
# how far each gets at 64 KiB). KNUTE_DL_HEAP overrides every run's heap, to
# measure a role's need.
TARGET_HEAP = "64k"


def _heap(role: str, link: str, bits: int) -> str:
    forced = os.environ.get("KNUTE_DL_HEAP")
    if forced:
        return forced
    need = DOWNLINK_NEED_KIB[(role, link)][0 if bits == 32 else 1]
    return TARGET_HEAP if need <= 64 or bits == 32 else f"{need}k"


HEAP_LINE = re.compile(r"knute: heap: (\d+) bytes used, (\d+) free (after [a-z ]+)")


def _figures(name: str, node: Any) -> list[tuple[str, int, int]]:
    """The node's heap lines (what, used, free), printed for docs/firmware.md."""
    console = node.console()
    found = [(m.group(3), int(m.group(1)), int(m.group(2)))
             for m in HEAP_LINE.finditer(console)]
    print(f"\n{name} ({node.heap}):")
    for what, used, free in found:
        print(f"  {what:<24} {used:>7} B used {free:>7} B free")
    # A role that ran out of heap anywhere on the way fails here, even where it
    # recovered (the app logs a failed poll and carries on).
    assert "MemoryError" not in console, console
    return found


def _uart_frame(node: Any, index: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        frames = [frame.decode(body, KEY) for rtype, body in list(node.ptys["link"].records)
                  if rtype == stream.REC_FRAME]
        if len(frames) > index:
            return frames[index]
        if node.proc is not None and node.proc.poll() is not None:
            break
        time.sleep(0.01)
    raise AssertionError(f"no frame {index}:\n{node.console()}")


def test_serial_water_meter_takes_a_downlink_in_the_bench_heap(bench_node: NodeFactory,
                                                              upy_bits: int) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True
    cfg["bench"].update({"rx_wait_real_ms": RX_WAIT_REAL_MS, "time_scale": 3600,
                         "stop_after_s": STOP_AFTER_S})
    node = bench_node(cfg, heap=_heap("water_meter", "uart", upy_bits))
    node.start()
    first = _uart_frame(node, 0)
    down = dl.encode(DEVICE, 1, [dl.config(5, {3: 9000})], KEY)
    os.write(node.ptys["link"].master, stream.encode_record(stream.REC_FRAME, down))
    second = _uart_frame(node, 1)
    node.wait_line("free after boot", count=2)
    node.kill9()
    figures = _figures("water meter, serial", node)
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], node.console()
    assert json.loads((node.dir / "config.json").read_text())["water"]["burst_lph"] == 9000
    assert [what for what, _u, _f in figures][:4] == [
        "after boot", "after the first send", "after the apply", "after boot"]


def test_lora_water_meter_takes_a_downlink(bench_node: NodeFactory, upy_bits: int) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True
    cfg["link"] = {"type": "lora"}
    cfg["bench"].update({"radio": {"path": "air.txt", "rx_path": "dl.txt"},
                         "rx_wait_real_ms": RX_WAIT_REAL_MS, "time_scale": 3600,
                         "stop_after_s": STOP_AFTER_S})
    node = bench_node(cfg, heap=_heap("water_meter", "lora", upy_bits))
    air = Air(node)
    node.start()
    first, end_ms = air.uplink(node.proc)
    air.answer(end_ms + 1000, dl.encode(DEVICE, 1, [dl.clock(7, first["fcnt"], end_ms // 1000,
                                                             end_ms % 1000),
                                                    dl.config(8, {4: 12})], KEY))
    second, _ = air.uplink(node.proc)
    air.silence()
    third, _ = air.uplink(node.proc)
    node.close()
    figures = _figures("water meter, LoRa", node)
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [0, 7 << 8, 8 << 8], node.console()
    assert "dl" not in third["values"]
    assert json.loads((node.dir / "config.json").read_text())["water"]["leak_hours"] == 12
    assert [what for what, _u, _f in figures][:4] == [
        "after boot", "after the first send", "after the apply", "after boot"]


def test_air_node_takes_a_downlink(bench_node: NodeFactory, upy_bits: int,
                                   tmp_path: Path) -> None:
    master, pm_path = open_pty()
    sensor = BenchSDS011(master)
    try:
        cfg = _air_config(pm_path, tmp_path / "bme280.img")
        node = bench_node(cfg, heap=_heap("air_quality", "uart", upy_bits))
        node.start()
        first = _uart_frame(node, 0)
        down = dl.encode(DEVICE, 1, [dl.config(5, {8: 120})], KEY)
        os.write(node.ptys["link"].master, stream.encode_record(stream.REC_FRAME, down))
        second = _uart_frame(node, 1)
        node.wait_line("free after boot", count=2)
        node.kill9()
    finally:
        sensor.stop()
    figures = _figures("air quality, serial, SDS011 + BME280", node)
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], node.console()
    assert second["values"]["temperature"] == 251
    assert json.loads((node.dir / "config.json").read_text())["air"]["interval_s"] == 120
    assert [what for what, _u, _f in figures][:4] == [
        "after boot", "after the first send", "after the apply", "after boot"]


def _air_config(pm_path: str, image: Path) -> dict[str, Any]:
    image.write_text(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, 30000))
    return {
        "role": "air_quality", "device_id": DEVICE, "key": KEY_HEX, "downlink": True,
        "link": {"type": "uart", "uart": "link"}, "board": "unix", "jitter_s": 0,
        "air": {"pm_sensor": "sds011", "interval_s": 50, "warmup_s": 20, "sample_s": 20,
                "climate_every_s": 10},
        "bench": {"uart": {"pm": pm_path}, "i2c": {"i2c0": str(image)},
                  "time_scale": 10, "stop_after_s": 1000, "seed": 3,
                  "rx_wait_real_ms": RX_WAIT_REAL_MS},
    }


def test_lora_air_node_takes_a_downlink(bench_node: NodeFactory, upy_bits: int,
                                        tmp_path: Path) -> None:
    master, pm_path = open_pty()
    sensor = BenchSDS011(master)
    try:
        cfg = _air_config(pm_path, tmp_path / "bme280.img")
        cfg["link"] = {"type": "lora"}
        cfg["bench"]["radio"] = {"path": "air.txt", "rx_path": "dl.txt"}
        node = bench_node(cfg, heap=_heap("air_quality", "lora", upy_bits), uarts=())
        air = Air(node)
        node.start()
        first, end_ms = air.uplink(node.proc)
        air.answer(end_ms + 1000, dl.encode(DEVICE, 1, [dl.config(5, {8: 120})], KEY))
        second, _ = air.uplink(node.proc)
        air.silence()
        node.wait_line("free after boot", count=2)
        node.close()
    finally:
        sensor.stop()
    figures = _figures("air quality, LoRa, SDS011 + BME280", node)
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], node.console()
    assert second["values"]["temperature"] == 251
    assert json.loads((node.dir / "config.json").read_text())["air"]["interval_s"] == 120
    assert [what for what, _u, _f in figures][:4] == [
        "after boot", "after the first send", "after the apply", "after boot"]


def test_downlink_must_be_a_boolean() -> None:
    from firmware import config

    base = {"role": "water_meter", "device_id": 1, "key": KEY_HEX}
    assert config.validate(dict(base))["downlink"] is True     # on unless turned off
    assert config.validate(dict(base, downlink=False))["downlink"] is False
    assert config.validate(dict(base, downlink=True))["downlink"] is True
    with pytest.raises(config.ConfigError, match="downlink must be true or false"):
        config.validate(dict(base, downlink="yes"))

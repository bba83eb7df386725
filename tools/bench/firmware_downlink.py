"""The downlink path's heap: each role with an uplink takes one config downlink on the bench.

The serial water meter, the LoRa water meter and the air node (SDS011 and
BME280) on either link boot as bench nodes (knute.tools.rig.node) with
``downlink`` on, send, listen in their receive windows, apply a config downlink
by the restart in place and send again with the report of it. Each node prints
``knute: heap: N bytes used, M free after ...`` after boot, after its first
send, after the apply and after the next boot: ``run_case`` returns those
lines with the frames and the node, for tests/firmware/test_downlink_roles_heap.py
(which checks the downlink was applied) and for ``knute bench firmware`` (which
prints the figures).

The heap each run gets (``case_heap_kib``): the project's 64 KiB where the
role's downlink path fits it, else the role's measured need on that build
(knute.tools.board_heap.DOWNLINK_NEED_KIB). ``KNUTE_DL_HEAP`` overrides every
run's heap, to measure a role's need.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from knute.protocol import downlink as dl
from knute.protocol import stream
from knute.tools.board_heap import DOWNLINK_NEED_KIB
from knute.tools.rig.node import KEY, KEY_HEX, Air, BenchNode, water_config
from knute.tools.rig.ptys import open_pty
from knute.tools.rig.sensors import BenchSDS011, example_bme280_image

DEVICE = 4660
TARGET_KIB = 64
WAIT_S = 60.0
# The bench clock runs 3600 times (the air node 10 times) faster than real time,
# except while a window waits for our answer (its clock held, up to
# RX_WAIT_REAL_MS of real time); neither may run out before the run is done,
# however loaded the machine.
RX_WAIT_REAL_MS = 300000
STOP_AFTER_S = 1000 * 3600
# (role, link) of every role with an uplink of its own, in the order they run.
CASES = (("water_meter", "uart"), ("water_meter", "lora"),
         ("air_quality", "uart"), ("air_quality", "lora"))
HEAP_LINE = re.compile(r"knute: heap: (\d+) bytes used, (\d+) free (after [a-z ]+)")
# The heap lines one run prints, in order, and their keys in the bench's JSON.
STAGES = (("after boot", "free_after_boot"), ("after the first send", "free_after_first_send"),
          ("after the apply", "free_after_apply"), ("after boot", "free_after_next_boot"))

# (config, heap=..., uarts=...) -> a BenchNode not yet started
NodeMaker = Callable[..., BenchNode]


def case_heap_kib(role: str, link: str, bits: int) -> int:
    """KiB of heap the run of (role, link) gets on the build (see the module docstring)."""
    need = DOWNLINK_NEED_KIB[(role, link)][0 if bits == 32 else 1]
    return max(TARGET_KIB, need)


def case_heap(role: str, link: str, bits: int) -> str:
    """The ``-X heapsize`` of the run: ``KNUTE_DL_HEAP`` when set, else ``case_heap_kib``."""
    return os.environ.get("KNUTE_DL_HEAP") or f"{case_heap_kib(role, link, bits)}k"


class CaseRun:
    """One role's run: its node (closed), its frames and the heap lines it printed."""

    def __init__(self, node: BenchNode, frames: list[dict[str, Any]]) -> None:
        self.node = node
        self.frames = frames
        self.console = node.console()
        # (what, used, free) in the order printed
        self.figures = [(m.group(3), int(m.group(1)), int(m.group(2)))
                        for m in HEAP_LINE.finditer(self.console)]

    def config(self) -> dict[str, Any]:
        """The node's config.json after the run (the downlink's change applied)."""
        return dict(json.loads((self.node.dir / "config.json").read_text()))

    def free(self) -> dict[str, int]:
        """Bytes free at each stage, keyed as ``STAGES``; ValueError if a stage is missing."""
        whats = [what for what, _used, _free in self.figures[:len(STAGES)]]
        if whats != [what for what, _key in STAGES]:
            raise ValueError(f"heap lines {whats}, not {[what for what, _key in STAGES]}")
        return {key: free for (_what, key), (_w, _used, free) in zip(STAGES, self.figures,
                                                                      strict=False)}


def run_case(role: str, link: str, make_node: NodeMaker, bits: int,
             heap: str | None = None) -> CaseRun:
    """Run (role, link) through one config downlink and its restart in place."""
    heap = heap or case_heap(role, link, bits)
    if role == "water_meter":
        return _water(link, make_node, heap)
    if role == "air_quality":
        return _air(link, make_node, heap)
    raise ValueError(f"no downlink run for role {role!r}")


def _uart_case(node: BenchNode, change: dict[int, int]) -> list[dict[str, Any]]:
    """A node on the uart link started: its first frame, the config downlink ``change``
    sent back, its second frame (with the report), the next boot; the node killed."""
    node.start()
    first = node.link_frame(0, WAIT_S)
    down = dl.encode(DEVICE, 1, [dl.config(5, change)], KEY)
    os.write(node.ptys["link"].master, stream.encode_record(stream.REC_FRAME, down))
    second = node.link_frame(1, WAIT_S)
    node.wait_line("free after boot", count=2)
    node.kill9()
    return [first, second]


def _water(link: str, make_node: NodeMaker, heap: str) -> CaseRun:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True
    cfg["bench"].update({"rx_wait_real_ms": RX_WAIT_REAL_MS, "time_scale": 3600,
                         "stop_after_s": STOP_AFTER_S})
    if link == "uart":
        node = make_node(cfg, heap=heap)
        try:
            frames = _uart_case(node, {3: 9000})
        finally:
            node.close()
        return CaseRun(node, frames)
    cfg["link"] = {"type": "lora"}
    cfg["bench"]["radio"] = {"path": "air.txt", "rx_path": "dl.txt"}
    node = make_node(cfg, heap=heap)
    try:
        air = Air(node)
        node.start()
        first, end_ms = air.uplink(node.proc)
        air.answer(end_ms + 1000, dl.encode(DEVICE, 1, [
            dl.clock(7, first["fcnt"], end_ms // 1000, end_ms % 1000),
            dl.config(8, {4: 12})], KEY))
        second, _ = air.uplink(node.proc)
        air.silence()
        third, _ = air.uplink(node.proc)
    finally:
        node.close()
    return CaseRun(node, [first, second, third])


def air_config(pm_path: str) -> dict[str, Any]:
    """An air node (SDS011 on ``pm_path``, BME280 image ``bme280.img`` in its flash) with
    downlink on."""
    return {
        "role": "air_quality", "device_id": DEVICE, "key": KEY_HEX, "downlink": True,
        "link": {"type": "uart", "uart": "link"}, "board": "unix", "jitter_s": 0,
        "air": {"pm_sensor": "sds011", "interval_s": 50, "warmup_s": 20, "sample_s": 20,
                "climate_every_s": 10},
        "bench": {"uart": {"pm": pm_path}, "i2c": {"i2c0": "bme280.img"},
                  "time_scale": 10, "stop_after_s": 1000, "seed": 3,
                  "rx_wait_real_ms": RX_WAIT_REAL_MS},
    }


def _air(link: str, make_node: NodeMaker, heap: str) -> CaseRun:
    master, pm_path = open_pty()
    sensor = BenchSDS011(master)
    node: BenchNode | None = None
    try:
        cfg = air_config(pm_path)
        if link == "lora":
            cfg["link"] = {"type": "lora"}
            cfg["bench"]["radio"] = {"path": "air.txt", "rx_path": "dl.txt"}
        node = make_node(cfg, heap=heap, uarts=("link",) if link == "uart" else ())
        (node.dir / "bme280.img").write_text(example_bme280_image())
        if link == "uart":
            first, second = _uart_case(node, {8: 120})
        else:
            air = Air(node)
            node.start()
            first, end_ms = air.uplink(node.proc)
            air.answer(end_ms + 1000, dl.encode(DEVICE, 1, [dl.config(5, {8: 120})], KEY))
            second, _ = air.uplink(node.proc)
            air.silence()
            node.wait_line("free after boot", count=2)
    finally:
        if node is not None:
            node.close()
        sensor.stop()
    return CaseRun(node, [first, second])

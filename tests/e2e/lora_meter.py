"""The LoRa water meter of the end-to-end tests: the real firmware on the unix port as a
bench node, its uplinks on the bench radio file ``air.txt`` and its downlinks read from
``dl.txt`` in its receive windows."""

from __future__ import annotations

from typing import Any

from knute.tools.rig.node import water_config
from tests.firmware.conftest import NodeFactory

DEV = 0x1234                    # water_config's device id
FREQ = 868_100_000
SF = 7


def lora_meter(bench_node: NodeFactory) -> Any:
    """A LoRa water meter with downlinks on, sending hourly, not yet started."""
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True       # the default; its heap follows bench_heap
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"freq_hz": FREQ, "sf": SF}
    # Each window may wait a few real seconds for the gateway's answer, the
    # node's clock held; a window nobody answers then closes.
    cfg["bench"].update({"radio": {"path": "air.txt", "rx_path": "dl.txt"},
                         "rx_wait_real_ms": 4000, "time_scale": 3600,
                         "stop_after_s": 1000 * 3600})
    node = bench_node(cfg, name="meter")
    (node.dir / "dl.txt").write_text("")
    return node

"""What the node tells a technician: its boot report on the console and on flash,
its device id in hex, and every frame it sends as hex that ``knute decode`` reads.

Real firmware on the MicroPython unix port at the default 64 KiB heap.
"""

from __future__ import annotations

import json
import re

from knute.protocol import frame
from knute.tools.rig.node import HOUR_T0, KEY, pulse_lines, water_config
from tests.firmware.conftest import NodeFactory


def test_console_prints_the_device_id_and_each_frame_in_hex(bench_node: NodeFactory) -> None:
    cfg = water_config()
    cfg["device_id"] = 0x00C0FFEE
    # The stepped clock: at 36000x the 0.2 h after the send are 20 ms of real time.
    cfg["bench"].update({"stop_after_s": int(6.2 * 3600), "time_scale": 0})
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [100, 0, 334, 200, 500, 100]))
    node.start()
    assert node.wait() == 0, node.console()
    boot = node.wait_line("knute: boot role=")
    assert " device=00c0ffee " in boot, boot
    assert str(0x00C0FFEE) not in node.console()          # no decimal id anywhere
    sent = [line for line in node.lines if "knute: sent fcnt=" in line]
    on_link = node.frames()
    assert len(sent) == len(on_link) == 1, node.console()
    match = re.search(r" frame=([0-9a-f]+)$", sent[0])
    assert match, sent[0]
    printed = bytes.fromhex(match.group(1))
    # The hex on the console is the frame on the link, and it decodes with the key.
    assert frame.decode(printed, KEY) == on_link[0]
    assert f"bytes={len(printed)} " in sent[0]


def test_safe_mode_leaves_its_reason_on_flash_until_a_good_boot(
        bench_node: NodeFactory) -> None:
    cfg = water_config()
    cfg["bench"]["stop_after_s"] = 60
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text("")
    node.write_config({**cfg, "link": {"type": "uart", "uart": "nowhere"}})
    node.start()
    assert node.wait() == 3
    report = node.state("safe_mode")
    assert report is not None, node.console()
    assert report["reason"].startswith("link uart did not start: bench.uart.nowhere")
    assert report["reason"] in node.console()
    assert report["reset"] == "power-on"

    # Fixed: the next boot that gets past the boot-loop guard removes the report.
    node.write_config(cfg)
    node.start()
    assert node.wait() == 0, node.console()
    assert node.state("safe_mode") is None
    assert "knute: heap: " in node.console()


def test_a_config_that_does_not_load_is_reported_on_flash(bench_node: NodeFactory) -> None:
    node = bench_node(water_config())
    (node.dir / "config.json").write_text('{"role": "water_meter", "device_id": 46')
    node.start()
    assert node.wait() == 3
    report = json.loads((node.dir / "state" / "safe_mode.json").read_text())
    assert "not valid JSON" in report["reason"]

"""What receiving a downlink costs a node's heap, printed (a benchmark, not a limit).

The compiled modules run in a 64 KiB heap, the smallest the roles boot in,
and in 40 KiB (docs/protocol.md section 12 says so):
import firmware.downlink, build a Downlink, then receive a config downlink,
a clock request's answer and an alarm acknowledgement. The figures are
printed for the roles' wiring to budget (the air node has about 2 KB to
spare, so it must load the module only around its receive windows).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from knute.protocol import downlink as dl

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(16))


@pytest.mark.parametrize("heap", ["64k", "40k"])
def test_a_downlink_is_received_in_a_small_heap(heap: str, micropython_bin: Path,
                                               flash_lib: Path, tmp_path: Path) -> None:
    node = tmp_path / "node"
    shutil.copytree(flash_lib, node / "lib")
    (node / "config.json").write_text(json.dumps({
        "role": "water_meter", "device_id": 0x1234, "key": KEY.hex(),
        "link": {"type": "uart"}, "water": {"sends_per_day": 4, "profile_len": 6}}))
    frames = [dl.encode(0x1234, 1, [dl.config(1, {1: 2, 2: 12, 3: 5000, 4: 12})], KEY),
              dl.encode(0x1234, 2, [dl.ack_alarm(2, 1), dl.reboot(3)], KEY),
              dl.encode(0x1234, 3, [dl.rekey(4, 1, bytes(range(1, 17)))], KEY)]
    (node / "frames.hex").write_text("".join(f.hex() + "\n" for f in frames))
    shutil.copy(ROOT / "tests" / "firmware" / "upy_downlink_heap.py", node / "heap.py")
    result = subprocess.run([str(micropython_bin), "-X", "heapsize=" + heap, "heap.py"], cwd=node,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\nheap {heap} (step, held bytes, allocated during the step):\n" + result.stdout)
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert "rejected" not in lines
    assert set(lines) >= {"import", "build", "receive0", "receive1", "receive2", "report"}
    assert json.loads((node / "config.json").read_text())["water"]["leak_hours"] == 12
    assert lines["report"] == "[11, 256, 512, 768, 1024]"  # want, clock, rekey

"""`knute provision` sets the node's clock (docs/protocol.md 12.6), on a virtual board.

The unix port has no machine.RTC: the node keeps the host's clock as its board
time and provisioning writes the firmware's clock offset (state/clock.json),
which the node reads at boot.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from knute.tools.sim.vdevice import VirtualBoard
from tests.tools.conftest import bench_wiring


def test_provision_writes_the_clock_and_the_node_boots_with_it(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    wiring = bench_wiring(tmp_path, board)
    result = subprocess.run(
        [str(knute_bin), "provision", "--port", board.port, "--kind", "water_meter",
         "--config", str(wiring), "--json", "--no-start"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    stored = json.loads((board.flash_dir / "state" / "clock.json").read_text())
    assert stored == {"offset_ms": summary["clock_offset_ms"]}
    # The host's clock and the unix port's are the same clock: only the time the
    # command took to reach the board separates them.
    assert abs(summary["clock_offset_ms"]) < 5000

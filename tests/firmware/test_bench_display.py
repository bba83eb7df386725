"""``knute bench firmware --json`` covers the display role like the others."""

from __future__ import annotations

import json
import subprocess
import sys

from knute.tools.rig.node import ROOT


def test_bench_firmware_json_covers_the_display_role() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "knute.tools.cli", "bench", "firmware", "--json", "--cycles", "3",
         "--role", "display"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"display"}
    entry = result["display"]
    for figures in (entry, entry["naive"], entry["bits32"]):
        assert figures["allocs_per_cycle"] > 0
        assert figures["resident_bytes"] < figures["peak_heap_bytes"] < 128 * 1024
        assert figures["cycles"] == 3
    # One index message and one frame on a board's word size fit its 48 KiB heap goal.
    assert entry["bits32"]["peak_heap_bytes"] < 48 * 1024
    # The role's reader and frame cost less than a payload copy and a tuple per pixel.
    assert entry["naive"]["allocs_per_cycle"] > entry["allocs_per_cycle"]

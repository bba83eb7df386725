"""``knute bench firmware`` measures inside both unix ports and prints one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys

from knute.tools.rig.node import ROOT


def test_bench_firmware_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "knute.tools.cli", "bench", "firmware", "--json", "--cycles", "2",
         "--role", "water_meter", "--role", "radio_bridge"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"water_meter", "radio_bridge", "power"}
    # The power contract: one row per role, board and design (tools/power.py).
    rows = result.pop("power")
    for row in rows:
        assert {"role", "board", "design", "uah_per_day", "battery_years"} <= set(row)
    designs = {row["design"] for row in rows if row["role"] == "water_meter"}
    assert designs == {"light_sleep", "deep_sleep"}
    for entry in result.values():
        for figures in (entry, entry["naive"]):
            assert figures["allocs_per_cycle"] > 0
            assert figures["resident_bytes"] < figures["peak_heap_bytes"] < 128 * 1024
        # The contract: the 32-bit build's figures under bits32, next to the 64-bit ones.
        # Objects are half the size there, so the same code needs less heap.
        b32 = entry["bits32"]
        assert b32["resident_bytes"] < b32["peak_heap_bytes"] < entry["peak_heap_bytes"]
        assert b32["allocs_per_cycle"] > 0
    water = result["water_meter"]
    # The downlink path's heap per link: every role fits 64 KiB on the 32-bit build.
    assert set(water["downlink_heap_kib"]) == {"uart", "lora"}
    for kib in water["downlink_heap_kib"].values():
        assert kib["bits32"] <= 64 <= kib["bits64"]
    assert "downlink_heap_kib" not in result["radio_bridge"]     # sends no uplinks of its own
    # A new AES key schedule and fresh values per frame cost allocations.
    assert water["naive"]["allocs_per_cycle"] > water["allocs_per_cycle"]

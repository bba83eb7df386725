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
    # The downlink path's heap per link and build, measured by a run through a
    # config downlink: every role runs in 64 KiB on the 32-bit build, and in at
    # least that on the 64-bit port; each figure is what the node had free.
    heaps = water["downlink_heap"]
    assert set(heaps) == {"uart", "lora"}
    for by_bits in heaps.values():
        assert set(by_bits) == {"bits32", "bits64"}
        assert by_bits["bits32"]["heap_kib"] == 64 <= by_bits["bits64"]["heap_kib"]
        for figures in by_bits.values():
            free = [figures[key] for key in ("free_after_boot", "free_after_first_send",
                                             "free_after_apply", "free_after_next_boot")]
            assert all(0 < n < figures["heap_kib"] * 1024 for n in free), figures
            # The first send allocates; the restart in place gives it back.
            assert figures["free_after_first_send"] < figures["free_after_apply"]
        # The same code's objects are half the size on the 32-bit build: in the same
        # 64 KiB, it has more left after boot.
        if by_bits["bits64"]["heap_kib"] == 64:
            assert by_bits["bits32"]["free_after_boot"] > by_bits["bits64"]["free_after_boot"]
    assert "downlink_heap" not in result["radio_bridge"]     # sends no uplinks of its own
    # A new AES key schedule and fresh values per frame cost allocations.
    assert water["naive"]["allocs_per_cycle"] > water["allocs_per_cycle"]

"""``knute bench firmware`` prints the downlink path's heap it measured, and can leave it out."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from knute.tools.board_heap import DOWNLINK_NEED_KIB
from knute.tools.rig.node import ROOT


def _bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "knute.tools.cli", "bench", "firmware", "--cycles", "1",
         "--bits", "32", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_table_shows_the_free_bytes_of_each_link_in_the_heap_it_ran_in() -> None:
    out = _bench("--role", "air_quality")
    assert "downlink path's heap (measured" in out, out
    rows = {}
    for line in out.splitlines():
        match = re.match(r"air_quality\s+(uart|lora)\s+32-bit\s+(\d+)((?:\s+\d+){4})$", line)
        if match:
            rows[match.group(1)] = (int(match.group(2)), [int(n) for n in match.group(3).split()])
    assert set(rows) == {"uart", "lora"}, out
    for link, (heap_kib, free) in rows.items():
        assert heap_kib == max(64, DOWNLINK_NEED_KIB[("air_quality", link)][0]), out
        assert all(0 < n < heap_kib * 1024 for n in free), out


def test_no_downlink_heap_leaves_the_runs_out() -> None:
    result = json.loads(_bench("--role", "water_meter", "--no-downlink-heap", "--json"))
    assert "downlink_heap" not in result["water_meter"]
    assert result["water_meter"]["bits32"]["peak_heap_bytes"] > 0

"""``knute bench city`` runs its gateways, loses nothing and reports every gateway."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def test_bench_city_short(knute_bin: Path) -> None:
    out = subprocess.run([str(knute_bin), "bench", "city", "--gateways", "2", "--rate", "60",
                          "--seconds", "3", "--meters", "20", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    city = doc["city"]
    assert [g["gateway"] for g in city["per_gateway"]] == ["city-0", "city-1"]
    assert all(g["accepted"] > 0 and g["accepted_per_s"] > 0 for g in city["per_gateway"])
    # Each gateway heard the other's readings (learn_counters).
    assert all(g["learned_heard"] > 0 for g in city["per_gateway"])
    for run in (doc["baseline"], city):
        assert run["lost"] == 0 and run["mismatched_duplicates"] == 0
        assert run["delivered"] >= run["accepted"] > 0

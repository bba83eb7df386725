"""``knute bench city --load simulate``: one simulate process feeds every gateway."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def test_bench_city_with_simulate_as_the_load(knute_bin: Path) -> None:
    out = subprocess.run([str(knute_bin), "bench", "city", "--load", "simulate",
                          "--gateways", "2", "--rate", "60", "--seconds", "3", "--meters", "20",
                          "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    city = doc["city"]
    assert city["load"] == "simulate"
    assert [g["gateway"] for g in city["per_gateway"]] == ["city-0", "city-1"]
    assert all(g["sent"] > 0 and g["accepted"] > 0 and g["accepted_per_s"] > 0
               and g["delivered_per_s"] > 0 for g in city["per_gateway"])
    for run in (doc["baseline"], city):
        # Every valid frame simulate sent arrived, once or as same-reading copies.
        assert run["valid"] > 0 and run["lost"] == 0 and run["delivered"] == run["valid"]
        assert run["mismatched_duplicates"] == 0
    assert doc["baseline"]["duplicates"] == 0      # one gateway, one forwarder

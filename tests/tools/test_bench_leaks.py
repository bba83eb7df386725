"""``knute bench leaks``: the contract's JSON keys, and the floors on a small city."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from knute.backend.config import Config
from knute.backend.service import Backend
from knute.backend.store_sqlite import Store
from knute.tools.bench.leaks import bench_rules

ROOT = Path(__file__).resolve().parents[2]


def test_the_scoreboard_runs_the_service_rules(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.sqlite")
    service = Backend(Config(path=ROOT / "backend.toml"), store=store,
                      publish=lambda topic, doc: None, checker=object())  # type: ignore[arg-type]
    store.close()
    ours = bench_rules()
    for name in ("continuous_flow", "steady_flow", "night_flow", "burst", "district_loss_rise"):
        theirs = service.rules[name]
        mine = ours[name]
        assert (mine.open_above, mine.close_below, mine.open_after, mine.close_after) == \
            (theirs.open_above, theirs.close_below, theirs.open_after, theirs.close_after)


def test_small_scoreboard_has_the_keys_and_holds_the_floors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "knute.tools.cli", "bench", "leaks", "--json", "--seed", "2",
         "--cities", "1", "--districts", "5", "--households", "40", "--days", "16",
         "--sizes", "20,50,500,2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    board: dict[str, Any] = json.loads(proc.stdout)
    for key in ("household_found_48h", "district_found_7d", "false_alerts_per_district_week",
                "median_hours_to_detect", "median_size_error", "by_size"):
        assert key in board, key
    assert board["leaks"] == 8                      # a household and a pipe leak per size
    assert board["household_found_48h"] == 1.0
    assert board["district_found_7d"] == 1.0
    assert board["false_alerts_per_district_week"] < 1.0
    assert board["median_hours_to_detect"] is not None and board["median_hours_to_detect"] > 0
    assert 0 <= board["median_size_error"] < 0.5
    assert [row["size_l_h"] for row in board["by_size"]] == [20.0, 50.0, 500.0, 2000.0]


def test_bad_sizes_are_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "knute.tools.cli", "bench", "leaks",
                           "--sizes", "x"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--sizes" in proc.stderr

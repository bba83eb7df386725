"""``knute plan`` and ``knute bench plan`` as processes: the contract's flags and JSON keys."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def knute(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "knute.tools.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def plan_json(*argv: str) -> dict[str, Any]:
    proc = knute("plan", *argv, "--json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_contract_flags_and_keys(tmp_path: Path) -> None:
    png = tmp_path / "city.png"
    s = plan_json("--nodes", "1500", "--gateways", "2", "--radius-km", "0.5", "--channels", "1",
                  "--sf", "9", "--no-capture", "--sends-per-day", "24", "--seed", "3",
                  "--png", str(png))
    for key in ("uplinks", "frame_bytes", "airtime_ms", "offered_load", "delivery_ratio",
                "slot_completeness"):
        assert key in s, key
    assert s["uplinks"] == 1500 * 24
    assert s["airtime_ms"] == 246.784 and s["frame_bytes"] == 31   # protocol.airtime, SF9
    g = 1500 * 24 * 0.246784 / 86400
    assert s["offered_load"] == round(g, 6) or abs(s["offered_load"] - g) < 1e-3
    # Two concentrators: a frame lost at one may be heard at the other, never worse.
    assert s["delivery_ratio"] >= math.exp(-2 * g) - 0.02
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capture_flag_changes_the_result() -> None:
    args = ("--nodes", "1500", "--gateways", "1", "--radius-km", "0.5", "--channels", "1",
            "--sf", "10", "--sends-per-day", "48")
    off = plan_json(*args, "--no-capture")
    on = plan_json(*args, "--capture")
    assert on["delivery_ratio"] > off["delivery_ratio"]


def test_text_report_and_csv(tmp_path: Path) -> None:
    csv = tmp_path / "nodes.csv"
    proc = knute("plan", "--nodes", "500", "--gateways", "2", "--csv-out", str(csv))
    assert proc.returncode == 0, proc.stderr
    assert "delivery ratio" in proc.stdout and "hourly slots" in proc.stdout
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("node,x_km,y_km,sf") and len(rows) == 501


def test_nodes_csv_and_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "nodes.csv"
    good.write_text("x_km,y_km\n0.1,0.2\n-0.3,0.4\n")
    s = plan_json("--nodes-csv", str(good), "--gateways", "1")
    assert s["nodes"] == 2 and s["uplinks"] == 8
    bad = tmp_path / "bad.csv"
    bad.write_text("0.1,0.2\n0.3,north\n")
    proc = knute("plan", "--nodes-csv", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"knute plan: --nodes-csv {bad} line 2: expected x_km,y_km; got '0.3,north'"]


def test_bad_input_is_one_line() -> None:
    for argv, needle in ((("--gateways", "0"), "--gateways"),
                         (("--sends-per-day", "500"), "duty cycle"),
                         (("--channels", "870.5"), "--channels"),
                         (("--radius-km", "-1"), "--radius-km"),
                         (("--hours", "-2"), "--hours must be a positive number; got -2"),
                         (("--capture-db", "nan"), "--capture-db")):
        proc = knute("plan", "--nodes", "10", *argv)
        assert proc.returncode == 2, argv
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_find_gateways_reports_the_count() -> None:
    s = plan_json("--nodes", "2000", "--radius-km", "3", "--find-gateways")
    found = s["find_gateways"]
    assert s["gateways"] == found["gateways"] >= 2
    assert s["delivery_ratio"] >= 0.99 and s["slot_completeness"] >= 0.999
    fewer = [t for t in found["tried"] if t["gateways"] == found["gateways"] - 1]
    assert fewer, found
    assert fewer[0]["delivery_ratio"] < 0.99 or fewer[0]["slot_completeness"] < 0.999


def test_bench_plan_json() -> None:
    proc = knute("bench", "plan", "--nodes", "3000", "--baseline-nodes", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["uplinks"] == 12_000 and out["sim_uplinks_per_s"] > 0
    assert out["baseline"]["same_frames_decoded"] is True

"""firmware/downlink.py on the unix port and on CPython: the vectors' node behaviour.

tests/firmware/upy_downlink_suite.py takes every rejected downlink of
tests/vectors/downlink.json to a node with the given device id and last
counter (dropped with its reason, counted, nothing written), every command
case to the vectors' water-meter node (the report entries of the file), and
runs the clock, two-phase rekey, module update (SHA-256, rollback) and alarm
acknowledgement flows. CPython is the oracle: the output must be the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "tests/firmware/upy_downlink_suite.py"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_node_side_prints_the_same_on_micropython_and_cpython(
    micropython_bin: Path, tmp_path: Path
) -> None:
    (tmp_path / "upy").mkdir()
    (tmp_path / "cpy").mkdir()
    upy = _run([str(micropython_bin), SUITE, str(tmp_path / "upy")])
    cpy = _run([sys.executable, SUITE, str(tmp_path / "cpy")])
    assert cpy.returncode == 0, cpy.stdout + cpy.stderr
    assert upy.returncode == 0, upy.stdout + upy.stderr
    assert upy.stdout == cpy.stdout
    assert "rejected 18 downlinks, nothing applied" in upy.stdout
    assert "failures 0" in upy.stdout

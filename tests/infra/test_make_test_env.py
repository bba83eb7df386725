"""How `make test` and `make unit` start pytest (dry runs of the real Makefile): one
collection in one process before the xdist workers, only with workers, and the
tests' scratch folders where TEST_TMP says."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dry_run(*args: str) -> list[str]:
    """The pytest command lines `make -n unit ARGS` would run, in order."""
    out = subprocess.run(["make", "--no-print-directory", "-n", "unit", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [line for line in out.splitlines() if " -m pytest " in line]


def test_the_workers_start_after_one_collection_and_only_with_workers() -> None:
    warm, run = dry_run("UNIT_JOBS=2")
    assert "--collect-only" in warm and "-n 2" not in warm
    assert '-m "not process and not slow"' in warm
    assert "--collect-only" not in run and "-n 2" in run
    assert '-m "not process and not slow"' in run
    [serial] = dry_run("UNIT_JOBS=0")
    assert "--collect-only" not in serial and " -n " not in serial


def test_the_scratch_folders_go_where_test_tmp_says(tmp_path: Path) -> None:
    run = dry_run("UNIT_JOBS=0", f"TEST_TMP={tmp_path}")[-1]
    assert f"PYTEST_DEBUG_TEMPROOT={tmp_path} TMPDIR={tmp_path} " in run
    run = dry_run("UNIT_JOBS=0", "TEST_TMP=")[-1]
    assert "PYTEST_DEBUG_TEMPROOT" not in run and "TMPDIR" not in run

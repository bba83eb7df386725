"""`make test` needs the 32-bit MicroPython build beside the repository and says so.

The real `upy32` target runs in a scratch tree laid out as CI lays it out: the
repository (here only its Makefile) with ``shared/`` beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KNUTE_UPY32"}
    return subprocess.run(["make", "--no-print-directory", "upy32"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_missing_build_fails_with_one_line_and_a_present_one_passes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "Makefile", repo / "Makefile")

    missing = _make(repo)
    assert missing.returncode != 0
    assert missing.stdout.splitlines() == [
        "make test: FAILED: no 32-bit MicroPython at ../shared/upy32/micropython "
        "(see shared/upy32/README.md; KNUTE_UPY32=<path> to use another)"]

    build = tmp_path / "shared" / "upy32" / "micropython"
    build.parent.mkdir(parents=True)
    build.write_text("#!/bin/sh\n")
    build.chmod(0o755)
    present = _make(repo)
    assert present.returncode == 0, present.stdout + present.stderr
    assert present.stdout == ""


def test_make_test_checks_for_it_before_running_anything() -> None:
    line = re.search(r"^test: (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert line is not None
    prereqs = line.group(1).split()
    assert "upy32" in prereqs
    # The checks and pytest run in the recipe, after every prerequisite; a check that
    # is itself a prerequisite must come after upy32.
    checks = [p for p in prereqs if p in ("lint", "typecheck", "mpy", "checks")]
    assert all(prereqs.index("upy32") < prereqs.index(p) for p in checks), prereqs

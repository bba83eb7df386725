""".ci/run passes a green `make test` and refuses one that tested nothing.

Runs the real .ci/run and Makefile in a scratch tree with this checkout's .venv
(``-o`` keeps make from bootstrapping: the stamp must already exist).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from knute.tools.rig.upy import upy32_path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)  # the venv running these tests, wherever it is
STAMP = VENV / ".knute-bootstrap"
LONG_AGO = 946684800  # 2000-01-01: older than any bootstrap stamp


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch project with the real Makefile, .ci/run and configs, and no code."""
    if not STAMP.is_file():
        pytest.fail(f"{STAMP} is missing: run `make bootstrap` first", pytrace=False)
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    for name in ("Makefile", "mypy-upy.ini", "pyproject.toml", "requirements.lock",
                 "requirements-upy.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (LONG_AGO, LONG_AGO))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    return tmp_path


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for every scratch run: each checks the same typeshed first."""
    return tmp_path_factory.mktemp("mypy-cache")


def ci_run(tree: Path, mypy_cache: Path) -> subprocess.CompletedProcess[str]:
    """``bash .ci/run`` in ``tree``, using this checkout's bootstrapped .venv.

    One pytest-xdist worker (JOBS=1): a scratch suite of one test needs no more, and
    the run still goes through xdist as make test does.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "PYTEST"))}
    env["MYPY_CACHE_DIR"] = str(mypy_cache)
    return subprocess.run(
        ["bash", ".ci/run", "-o", str(STAMP), f"VENV={VENV}", "MOSQUITTO_BIN=/bin/true",
         f"UPY32={upy32_path()}", "JOBS=1"],   # the scratch tree has no ../shared beside it
        cwd=tree, capture_output=True, text=True, timeout=300, env=env)


def test_ci_fails_when_no_test_was_collected(tree: Path, mypy_cache: Path) -> None:
    run = ci_run(tree, mypy_cache)
    assert run.returncode != 0, run.stdout
    assert "make test: FAILED: pytest collected no test (exit status 5)" in run.stdout
    assert "ci: FAILED: pytest collected no tests" in run.stdout


def test_ci_passes_a_green_suite_and_fails_a_red_one(tree: Path, mypy_cache: Path) -> None:
    test_file = tree / "tests" / "test_sample.py"
    test_file.write_text("def test_sample() -> None:\n    assert 6 * 7 == 42\n")
    run = ci_run(tree, mypy_cache)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert "ci: make test passed" in run.stdout

    test_file.write_text("def test_sample() -> None:\n    assert 6 * 7 == 43\n")
    run = ci_run(tree, mypy_cache)
    assert run.returncode != 0
    assert "1 failed" in run.stdout and "ci: FAILED: make test exited" in run.stdout

"""The air drivers and role on the real MicroPython unix port, CPython as the oracle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "tests/firmware/upy_air_suite.py"
HEAP = "tests/firmware/upy_air_heap.py"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_suite_prints_the_same_on_micropython_and_cpython(micropython_bin: Path) -> None:
    upy = _run([str(micropython_bin), SUITE])
    cpy = _run([sys.executable, SUITE])
    assert cpy.returncode == 0, cpy.stdout + cpy.stderr
    assert upy.returncode == 0, upy.stdout + upy.stderr
    assert upy.stdout.splitlines() == cpy.stdout.splitlines()
    lines = cpy.stdout.splitlines()
    assert lines[-1] == "done"
    # The suite covers what it says: corrupt frames counted, readings compensated,
    # frames sent by the role.
    assert any(line.startswith("sds011 chunk 1 frames") and " bad 0 " not in line
               for line in lines)
    assert sum(line.startswith("bme280 ") for line in lines) > 60
    assert sum(line.startswith("role sent") for line in lines) == 3


def test_steady_state_paths_do_not_allocate(micropython_bin: Path) -> None:
    """heap_lock() around driver polls, a BME280 measurement and the role's sampling.

    On the 32-bit build 2**30 is a heap integer: the role's sampling allocated
    there (``ALLOCATES role.poll (sampling)``) while the ticks arithmetic of the
    bench HAL went through 2**30; the last step crosses the ticks wrap-around.
    """
    result = _run([str(micropython_bin), HEAP])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout
    assert all(line.startswith("ok ") for line in lines), result.stdout

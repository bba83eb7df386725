"""The Makefile's MicroPython checks (typecheck-upy, mpy) catch what they should.

Each test copies the Makefile and mypy-upy.ini into a scratch tree with a few
modules and runs the real target there, using this checkout's .venv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)  # the venv running these tests, wherever it is

CLEAN_MODULE = """\
import struct
import time

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_PERIOD_MS = const(250)


def due(last_ms):
    return time.ticks_diff(time.ticks_ms(), last_ms) >= _PERIOD_MS


def header(fcnt):
    return struct.pack(">BH", 1, fcnt)
"""


def make(tree: Path, target: str) -> subprocess.CompletedProcess[str]:
    """Run ``make <target>`` in ``tree`` against this checkout's .venv."""
    return subprocess.run(
        ["make", "--no-print-directory", "-o", f"{VENV}/.knute-bootstrap", target,
         f"VENV={VENV}"],
        cwd=tree, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch project: the Makefile, mypy-upy.ini and empty protocol/, firmware/."""
    for name in ("Makefile", "mypy-upy.ini"):
        shutil.copy(ROOT / name, tmp_path / name)
    for package in ("protocol", "firmware", "firmware/hal"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    return tmp_path


def test_upy_check_passes_clean_code(tree: Path) -> None:
    (tree / "firmware" / "timing.py").write_text(CLEAN_MODULE)
    run = make(tree, "typecheck-upy")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "esp32 stubs" in run.stdout and "rp2 stubs" in run.stdout


@pytest.mark.parametrize(("source", "message"), [
    ("import itertools\n", 'module named "itertools"'),
    ("import time\nT = time.monotonic()\n", '"monotonic"'),
    ("import time\n\ndef later(t):\n    return time.ticks_add(t)\n", '"ticks_add"'),
    ("import machine\n\ndef f():\n    machine.no_such_thing()\n", '"no_such_thing"'),
])
def test_upy_check_rejects_what_micropython_lacks(tree: Path, source: str, message: str) -> None:
    (tree / "protocol" / "bad.py").write_text(source)
    run = make(tree, "typecheck-upy")
    assert run.returncode != 0
    assert "protocol/bad.py" in run.stdout and message in run.stdout, run.stdout


def test_upy_check_uses_each_ports_own_stubs(tree: Path) -> None:
    # rp2 exists only in the rp2 stubs, esp32 only in the esp32 stubs; port-named
    # modules (<port>.py, <port>_*.py) are checked against their own port only,
    # unix.py and unix_*.py against none.
    (tree / "firmware" / "hal" / "rp2.py").write_text("import rp2\nSM = rp2.StateMachine\n")
    (tree / "firmware" / "hal" / "esp32.py").write_text("import esp32\nP = esp32.Partition\n")
    (tree / "firmware" / "hal" / "unix.py").write_text("import termios\n")
    (tree / "firmware" / "hal" / "unix_wiring.py").write_text("import termios\n")
    (tree / "firmware" / "hal" / "rp2_pio.py").write_text("import rp2\n")
    run = make(tree, "typecheck-upy")
    assert run.returncode == 0, run.stdout + run.stderr

    (tree / "firmware" / "shared.py").write_text("import rp2\n")
    run = make(tree, "typecheck-upy")
    assert run.returncode != 0 and 'module named "rp2"' in run.stdout, run.stdout


def test_upy_stubs_do_not_leak_into_the_cpython_check(tmp_path: Path) -> None:
    module = tmp_path / "uses_machine.py"
    module.write_text("import machine\n")
    run = subprocess.run(
        [str(VENV / "bin" / "mypy"), "--strict", "--no-incremental", str(module)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert 'module named "machine"' in run.stdout, run.stdout


@pytest.mark.parametrize("folders", ["empty", "absent"])
def test_checks_accept_empty_or_absent_folders(tree: Path, folders: str) -> None:
    for package in ("protocol", "firmware"):
        shutil.rmtree(tree / package)
        if folders == "empty":
            (tree / package).mkdir()
    for target, said in (("typecheck-upy", "no MicroPython code yet"),
                         ("mpy", "mpy-cross: 0 files, 0 failed")):
        run = make(tree, target)
        assert run.returncode == 0, run.stdout + run.stderr
        assert said in run.stdout


def test_mpy_compiles_every_module_and_fails_on_errors(tree: Path) -> None:
    (tree / "firmware" / "timing.py").write_text(CLEAN_MODULE)
    run = make(tree, "mpy")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "mpy-cross: 4 files, 0 failed" in run.stdout
    assert not list(tree.rglob("*.mpy")), "compiled files belong in a temporary folder"

    (tree / "firmware" / "hal" / "broken.py").write_text("def f(:\n    pass\n")
    run = make(tree, "mpy")
    assert run.returncode != 0
    assert "firmware/hal/broken.py does not compile" in run.stdout
    assert "mpy-cross: 5 files, 1 failed" in run.stdout


STUBBED = """\
def encode(readings, key, fcnt=0):
    return bytes(len(readings) + fcnt)
"""


def test_stub_check_catches_a_stub_that_drifted_from_its_module(tree: Path) -> None:
    (tree / "protocol" / "codec.py").write_text(STUBBED)
    (tree / "protocol" / "codec.pyi").write_text(
        "def encode(readings: dict[str, int], key: bytes, fcnt: int = 0) -> bytes: ...\n")
    run = make(tree, "typecheck-stubs")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "stubtest protocol.codec" in run.stdout

    # the code gains an argument the stub does not know
    (tree / "protocol" / "codec.py").write_text(STUBBED.replace("fcnt=0", "fcnt=0, nonce=None"))
    run = make(tree, "typecheck-stubs")
    assert run.returncode != 0
    assert "protocol.codec.encode is inconsistent" in run.stdout, run.stdout
    assert 'stub does not have parameter "nonce"' in run.stdout, run.stdout


def test_unix_port_modules_are_checked_against_micropython_stdlib_stubs(tree: Path) -> None:
    # time.monotonic is CPython's: MicroPython (the unix port too) has ticks_ms.
    (tree / "firmware" / "hal" / "unix.py").write_text(
        "import time\n\n\ndef now_ms():\n    return int(time.monotonic() * 1000)\n")
    run = make(tree, "typecheck-upy")
    assert run.returncode != 0
    assert "mypy (MicroPython unix stubs)" in run.stdout
    assert 'firmware/hal/unix.py:5: error: Module has no attribute "monotonic"' in run.stdout, \
        run.stdout
    assert "typecheck-upy: errors with the stubs of: unix" in run.stdout

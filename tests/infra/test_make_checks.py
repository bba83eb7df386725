"""The Makefile's MicroPython checks (typecheck-upy, mpy) catch what they should.

Each test copies the Makefile and mypy-upy.ini into a scratch tree with a few
modules and runs the real target there, using this checkout's .venv. A
typecheck-upy run is three mypy starts over MicroPython's stubs (6 s of CPU), so
cases that fail in their own modules share one run, which checks each module's
errors by name.
"""

from __future__ import annotations

import re
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


# Modules named after a port (<port>.py, <port>_*.py) are checked against their own
# port's stubs only, unix.py and unix_*.py against the unix port's only: rp2 exists
# only in the rp2 stubs, esp32 only in the esp32 stubs, termios only on unix.
PORT_NAMED = {
    "firmware/hal/rp2.py": "import rp2\nSM = rp2.StateMachine\n",
    "firmware/hal/rp2_pio.py": "import rp2\n",
    "firmware/hal/esp32.py": "import esp32\nP = esp32.Partition\n",
    "firmware/hal/unix.py": "import termios\n",
    "firmware/hal/unix_wiring.py": "import termios\n",
}

# What MicroPython lacks, one module each: (source, what mypy says about it).
LACKING = [
    ("import itertools\n", 'module named "itertools"'),
    ("import time\nT = time.monotonic()\n", '"monotonic"'),
    ("import time\n\ndef later(t):\n    return time.ticks_add(t)\n", '"ticks_add"'),
    ("import machine\n\ndef f():\n    machine.no_such_thing()\n", '"no_such_thing"'),
]


def write(tree: Path, files: dict[str, str]) -> None:
    """Write ``files`` (path in the tree -> text)."""
    for name, text in files.items():
        (tree / name).write_text(text)


def by_port(stdout: str) -> dict[str, str]:
    """typecheck-upy's report split into each port's mypy output (port -> text)."""
    parts = re.split(r"^mypy \(MicroPython (\w+) stubs\).*$", stdout, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def errors_of(report: str, path: str) -> list[str]:
    """The error lines of ``report`` about the module at ``path``."""
    return [line for line in report.splitlines()
            if line.startswith(path + ":") and ": error: " in line]


def test_upy_check_passes_clean_code_and_port_named_modules(tree: Path) -> None:
    write(tree, {"firmware/timing.py": CLEAN_MODULE, **PORT_NAMED})
    run = make(tree, "typecheck-upy")
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(by_port(run.stdout)) == {"esp32", "rp2", "unix"}, run.stdout


def test_upy_check_rejects_what_each_port_lacks(tree: Path) -> None:
    # Every case in one run (a typecheck-upy is a mypy per port over its stubs): each
    # case is a module of its own, and each error line names its module.
    write(tree, {f"protocol/bad_{i}.py": source for i, (source, _) in enumerate(LACKING)})
    write(tree, PORT_NAMED)
    write(tree, {
        "firmware/shared.py": "import rp2\n",     # not port-named: checked on every port
        # time.monotonic is CPython's: MicroPython (the unix port too) has ticks_ms.
        "firmware/hal/unix.py":
            "import time\n\n\ndef now_ms():\n    return int(time.monotonic() * 1000)\n",
    })
    run = make(tree, "typecheck-upy")
    assert run.returncode != 0
    report = by_port(run.stdout)
    assert set(report) == {"esp32", "rp2", "unix"}, run.stdout
    for port in ("esp32", "rp2"):
        for i, (_, message) in enumerate(LACKING):
            found = errors_of(report[port], f"protocol/bad_{i}.py")
            assert found and message in found[0], (port, message, run.stdout)
    # Port-named modules are left out of the other ports' checks.
    for port, text in report.items():
        for path in PORT_NAMED:
            if path != "firmware/hal/unix.py":
                assert not errors_of(text, path), (port, path, run.stdout)
    assert 'module named "rp2"' in errors_of(report["esp32"], "firmware/shared.py")[0]
    assert not errors_of(report["rp2"], "firmware/shared.py"), run.stdout
    # unix.py only against the unix port's stubs, which lack CPython's time.monotonic.
    assert errors_of(report["unix"], "firmware/hal/unix.py") == [
        'firmware/hal/unix.py:5: error: Module has no attribute "monotonic"  [attr-defined]']
    assert "firmware/hal/unix.py" not in report["esp32"] + report["rp2"]
    assert "typecheck-upy: errors with the stubs of: esp32 rp2 unix" in run.stdout


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

"""Fixtures for the tools tests: virtual boards and the real mpremote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from knute.tools.sim.vdevice import VirtualBoard

# Virtual boards (and protocol code run by micropython_bin) on both unix port builds.
from tests.upybuild import micropython_bin, upy_bits

__all__ = ["micropython_bin", "upy_bits"]

MPREMOTE = Path(sys.executable).parent / "mpremote"

Mpremote = Callable[..., subprocess.CompletedProcess[str]]


def bench_wiring(tmp_path: Path, board: VirtualBoard,
                 extra: dict[str, object] | None = None) -> Path:
    """A ``knute provision --config`` file wiring a water meter on the virtual board:
    its UART link into a file, pulses from a file; ``extra`` sections replace the
    wiring's own of the same name."""
    (board.flash_dir / "link.bin").write_bytes(b"")
    (board.flash_dir / "pulses.txt").write_text("")
    config: dict[str, object] = {
        "bench": {"uart": {"link": "link.bin"}, "pulse": {"pulse": "pulses.txt"}}}
    config.update(extra or {})
    path = tmp_path / "wiring.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def board(tmp_path: Path, upy_bits: int) -> Iterator[VirtualBoard]:
    """A started virtual board with its flash in tmp_path/flash, on each unix port build."""
    with VirtualBoard(tmp_path / "flash", bits=upy_bits) as vboard:
        yield vboard


@pytest.fixture
def mpremote() -> Mpremote:
    """mpremote(port, *args) -> CompletedProcess, the real mpremote with a timeout."""

    def run(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MPREMOTE), "connect", port, *args], capture_output=True,
                              text=True, timeout=timeout, check=False)

    return run

"""Fixtures for the tools tests: virtual boards and the real mpremote."""

from __future__ import annotations

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

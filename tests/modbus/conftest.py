"""Fixtures for the Modbus tests: ``knute modbus-sim`` as a real subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

START_TIMEOUT_S = 20.0


@dataclass
class Sim:
    """A running simulator: where it listens (``info`` is its --json line)."""

    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    args: list[str]

    @property
    def tcp(self) -> str:
        """HOST:PORT of its Modbus TCP listener."""
        return str(self.info["tcp"])

    @property
    def rtu(self) -> str:
        """Path of the pty a poller opens for Modbus RTU."""
        return str(self.info["rtu"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


SimFactory = Callable[..., Sim]


def start_sim(knute: Path, args: list[str], log: Path) -> Sim:
    """Start ``knute modbus-sim --json ARGS`` and wait for its listening line."""
    with log.open("ab") as err:
        proc = subprocess.Popen([str(knute), "modbus-sim", "--json", *args],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            line += chunk
    if not line.endswith(b"\n"):
        proc.kill()
        proc.wait(5.0)
        proc.stdout.close()
        pytest.fail(f"modbus-sim {' '.join(args)} did not start: {log.read_text()[-2000:]}")
    return Sim(proc, json.loads(line), args)


@pytest.fixture
def modbus_sim(knute_bin: Path, tmp_path: Path) -> Iterator[SimFactory]:
    """``modbus_sim(*args, tcp=True)`` starts a simulator (TCP on a free port unless
    ``tcp=False``); every one is stopped at teardown."""
    sims: list[Sim] = []

    def start(*args: str, tcp: bool = True, port: int | None = None) -> Sim:
        argv = list(args)
        if tcp:
            argv += ["--tcp", f"127.0.0.1:{port or free_port()}"]
        sim = start_sim(knute_bin, argv, tmp_path / "modbus-sim.log")
        sims.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in sims:
            sim.stop()

"""``knute simulate --clock-file``: the city's clock stands still until the file says go.

Held, the bulk meters (modbus-sim) serve the city's start: their clock register
and totaliser do not move however long the wait; once the file gives the
epoch the city's clock runs from it. A file that names another start is one
error line, and the run stops what it started (modbus-sim) with it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from knute.tools.rig.wait import wait_for
from tests.conftest import free_port

SPEED = 3600.0
START = 1_790_000_000.0


def _simulate(knute_bin: str, tmp_path: Path, port: int, clock: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [knute_bin, "simulate", "--city", "--districts", "1", "--households", "2",
         "--speed", str(SPEED), "--start", str(START), "--clock-file", str(clock),
         "--for", "2", "--serial-pty", str(tmp_path / "radio"),
         "--modbus", f"127.0.0.1:{port}", "--seed", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _held(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for _ in range(8):
        line = proc.stdout.readline()
        if line.startswith("clock held:"):
            return line
    raise AssertionError(f"no 'clock held' line; {proc.communicate()}")


def _meter(port: int) -> tuple[int, int]:
    """(totaliser L, clock s) of the inlet meter (unit 1)."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()  # type: ignore[no-untyped-call]
    try:
        regs = client.read_holding_registers(0, count=10, device_id=1).registers
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return (regs[0] << 48 | regs[1] << 32 | regs[2] << 16 | regs[3]), regs[8] << 16 | regs[9]


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the simulator then stops its modbus-sim), SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _release(path: Path, simulated: float, wall: float) -> None:
    part = path.with_suffix(".part")
    part.write_text(json.dumps({"simulated": simulated, "wall": wall}))
    part.rename(path)


def test_the_clock_is_held_until_the_file_gives_its_epoch(knute_bin: str,
                                                          tmp_path: Path) -> None:
    port, clock = free_port(), tmp_path / "clock.json"
    proc = _simulate(knute_bin, tmp_path, port, clock)
    try:
        assert _held(proc).startswith(f"clock held: simulated {START:.3f} until {clock}")
        first = _meter(port)
        wait_for(lambda: (tmp_path / "radio").exists(), 20, "the pty")
        assert _meter(port) == first and first[1] == START          # held at the start
        wall = time.time() + 0.2
        _release(clock, START, wall)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"city clock: simulated {START:.3f} at wall {wall:.3f}"), line
        wait_for(lambda: _meter(port)[1] > START + 600, 20, "the meter's clock to run")
        index, at = _meter(port)
        assert index > first[0] and at > START + 600      # ten simulated minutes of flow
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        _stop(proc)


def test_a_file_for_another_start_is_one_error_line(knute_bin: str, tmp_path: Path) -> None:
    port, clock = free_port(), tmp_path / "clock.json"
    proc = _simulate(knute_bin, tmp_path, port, clock)
    try:
        _held(proc)
        _meter(port)                                    # modbus-sim is serving
        _release(clock, START + 60, time.time())
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 2
    assert err.strip() == (f"knute simulate: --clock-file {clock}: simulated "
                           f"{START + 60:.3f} is not --start {START:.3f}"), err
    import socket

    with socket.socket() as sock:                       # modbus-sim stopped with it
        assert sock.connect_ex(("127.0.0.1", port)) != 0

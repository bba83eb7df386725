"""`knute provision` against virtual boards: end to end, then every failure case."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.gateway.registry import Registry
from knute.tools.board import Board, FileToCopy, copy_files
from knute.tools.cli import provision
from knute.tools.sim.vdevice import VirtualBoard
from tests.tools.conftest import Mpremote


def _provision(knute_bin: Path, *args: str, timeout: float = 120,
               ) -> subprocess.CompletedProcess[str]:
    # The board's answer is waited for, not slept on: a virtual board on a loaded machine
    # may need more than the field default (5 s) to enter its raw REPL.
    if "--timeout" not in args:
        args = (*args, "--timeout", "60")
    return subprocess.run([str(knute_bin), "provision", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _devices(path: Path) -> list[tuple[int, str, bytes]]:
    registry = Registry(str(path))
    try:
        return [(d.device_id, d.kind, d.key) for d in registry.all()]
    finally:
        registry.close()


def _fails_cleanly(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr      # one line
    for word in words:
        assert word in result.stderr


def _bench_wiring(tmp_path: Path, board: VirtualBoard, **sections: object) -> str:
    """A --config file that wires the node on the virtual board: UART link into a file,
    pulses and bench radio from files (provisioning waits for the node to boot)."""
    for name in ("link.bin", "pulses.txt", "air.txt"):
        (board.flash_dir / name).write_bytes(b"")
    path = tmp_path / "wiring.json"
    path.write_text(json.dumps({
        "bench": {"uart": {"link": "link.bin"}, "pulse": {"pulse": "pulses.txt"},
                  "radio": {"path": "air.txt"}}, **sections}))
    return str(path)


def test_provision_end_to_end_then_check(knute_bin: Path, board: VirtualBoard,
                                         tmp_path: Path, mpremote: Mpremote) -> None:
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--registry", str(reg), "--device-id", "0x00c0ffee", "--show-key",
                        "--json", "--no-start", "--config", _bench_wiring(tmp_path, board),
                        "--set", "water.sends_per_day=8")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["device"] == "00c0ffee" and summary["kind"] == "water_meter"
    assert summary["verified"] == "sha256 on the board"
    assert summary["modules"].startswith("mpy ")

    # The flash holds the board layout, and the key on it is the registered one.
    flash = board.flash_dir
    config = json.loads((flash / "config.json").read_text())
    assert config["device_id"] == 0x00C0FFEE and config["role"] == "water_meter"
    assert config["key"] == summary["key"]
    assert (flash / "main.py").read_bytes() == (provision.ROOT / "firmware/main.py").read_bytes()
    assert (flash / "lib" / "protocol" / "frame.mpy").read_bytes()[:2] == b"M\x06"
    assert not list((flash / "lib").rglob("*.py"))
    assert _devices(reg) == [(0x00C0FFEE, "water_meter", bytes.fromhex(summary["key"]))]
    # Its send interval, from its config.json, for the gateway's silent-node alarm.
    assert summary["interval_s"] == 3 * 3600
    registry = Registry(str(reg))
    try:
        registered = registry.get(0x00C0FFEE)
        assert registered is not None and registered.interval_s == 3 * 3600
    finally:
        registry.close()

    # The compiled modules load on the board (the .mpy version matched).
    got = mpremote(board.port, "exec", "import sys\nsys.path.append('/lib')\n"
                   "import protocol.frame, firmware\nprint(protocol.frame.__file__, "
                   "firmware.VERSION)")
    assert got.stdout == f"/lib/protocol/frame.mpy {summary['firmware_version']}\n", got.stderr

    check = _provision(knute_bin, "--check", "--port", board.port, "--registry", str(reg),
                       "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["device"] == "00c0ffee"

    # A board whose key differs from the registry's is reported, not changed.
    config["key"] = "00" * 16
    (flash / "config.json").write_text(json.dumps(config))
    check = _provision(knute_bin, "--check", "--port", board.port, "--registry", str(reg))
    assert check.returncode == 1
    assert "key on the board differs" in check.stdout


# One build: what this checks happens on the host (the summary, the CSV, the
# files mpremote removes); the boards of both builds are provisioned by
# test_provision_end_to_end_then_check.
@pytest.mark.parametrize("upy_bits", [64], indirect=True)
def test_provision_text_summary_hides_the_key_and_writes_csv(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    csv_file = tmp_path / "new.csv"
    result = _provision(knute_bin, "--port", board.port, "--kind", "air_quality",
                        "--csv", str(csv_file), "--name", "school yard", "--config",
                        _bench_wiring(tmp_path, board,
                                      air={"pm_sensor": "none", "climate": "none"}))
    assert result.returncode == 0, result.stderr
    config = json.loads((board.flash_dir / "config.json").read_text())
    assert config["key"] not in result.stdout
    assert "registered  " + str(csv_file) in result.stdout
    lines = csv_file.read_text().splitlines()
    assert csv_file.stat().st_mode & 0o777 == 0o600, "the CSV holds keys"
    assert lines[0] == "device_id,kind,key,name,site,interval_s"
    assert lines[1] == (f"{config['device_id']:08x},air_quality,{config['key']},school yard,"
                        ",600")
    # The file imports into a registry as `knute devices import` does, interval and all.
    registry = Registry(str(tmp_path / "reg.db"))
    try:
        assert registry.import_csv(csv_file.read_text()) == 1
        imported = registry.get(config["device_id"])
        assert imported is not None and imported.interval_s == 600.0
    finally:
        registry.close()


# One build: what this checks happens on the host (the summary, the CSV, the
# files mpremote removes); the boards of both builds are provisioned by
# test_provision_end_to_end_then_check.
@pytest.mark.parametrize("upy_bits", [64], indirect=True)
def test_reprovisioning_replaces_old_modules(knute_bin: Path, board: VirtualBoard,
                                             tmp_path: Path) -> None:
    stale = board.flash_dir / "lib" / "protocol"
    stale.mkdir(parents=True)
    (stale / "frame.py").write_text("raise ImportError('stale source shadows the .mpy')\n")
    result = _provision(knute_bin, "--port", board.port, "--kind", "radio_bridge", "--json",
                        "--config", _bench_wiring(tmp_path, board))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["registered_in"] is None
    assert not (stale / "frame.py").exists()
    assert "key" not in json.loads((board.flash_dir / "config.json").read_text())


def test_no_such_port(knute_bin: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", str(tmp_path / "ttyACM9"), "--kind",
                        "water_meter", "--registry", str(reg))
    _fails_cleanly(result, "no such port")
    assert not reg.exists() or _devices(reg) == []


def test_pty_without_micropython(knute_bin: Path, pty_pair: tuple[int, str],
                                 tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", pty_pair[1], "--kind", "water_meter",
                        "--registry", str(reg), "--timeout", "1.5")
    _fails_cleanly(result, "no MicroPython answers")
    assert _devices(reg) == []


def test_device_id_already_registered(knute_bin: Path, board: VirtualBoard,
                                      tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    registry = Registry(str(reg))
    registry.add(0x1234, "air_quality", bytes(16))
    registry.close()
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--registry", str(reg), "--device-id", "4660")
    _fails_cleanly(result, "00001234 is already registered", "--device-id")
    assert _devices(reg) == [(0x1234, "air_quality", bytes(16))]
    # Refused before anything touched the board.
    assert not (board.flash_dir / "config.json").exists()


def test_copy_that_does_not_verify(knute_bin: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    with VirtualBoard(tmp_path / "flash", corrupt_writes=True) as vboard:
        result = _provision(knute_bin, "--port", vboard.port, "--kind", "water_meter",
                            "--registry", str(reg))
    _fails_cleanly(result, "does not match what was written", "nothing was registered")
    assert _devices(reg) == []


def test_full_flash_is_refused_before_writing(knute_bin: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    with VirtualBoard(tmp_path / "flash", flash_size=24 * 1024) as vboard:
        result = _provision(knute_bin, "--port", vboard.port, "--kind", "water_meter",
                            "--registry", str(reg))
    _fails_cleanly(result, "flash is full", "erase")
    assert _devices(reg) == []


def test_a_write_that_fails_midway_is_one_clear_error(tmp_path: Path) -> None:
    files = [FileToCopy(f"/f{n}.bin", bytes(6000)) for n in range(4)]
    # A generous timeout for the first raw REPL: the board was just powered on, and on a
    # loaded machine its interpreter may take more than the field default to answer.
    with VirtualBoard(tmp_path / "flash", flash_size=16 * 1024) as vboard, \
            Board(vboard.port, timeout_s=30.0) as conn, \
            pytest.raises(KnuteError, match="flash is full"):
        copy_files(conn, files)
    assert (tmp_path / "flash" / "f0.bin").exists()


def test_bad_config_is_refused_before_anything_is_written(knute_bin: Path,
                                                            board: VirtualBoard) -> None:
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--set", "water.sends_per_day=5")
    _fails_cleanly(result, "sends_per_day")
    assert not (board.flash_dir / "config.json").exists()

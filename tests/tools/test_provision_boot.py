"""`knute provision` registers only a node it has seen boot, checks a LoRa board's
drivers first, and `--check` reports a node in safe mode with its reason.

Virtual boards (the real MicroPython unix port behind a pty), the real mpremote
transport, the real firmware.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.gateway.registry import Registry
from knute.tools.board import BootWatch
from knute.tools.lora_drivers import lora_chip
from knute.tools.sim.vdevice import VirtualBoard
from tests.tools.conftest import Mpremote, bench_wiring

# Hang guards, not what the tests prove: a virtual board's soft reset starts a fresh
# interpreter, which on a loaded host can take longer than the 5 s a real board is given
# to answer (--timeout) before provision gives up on its raw REPL.
BOARD_TIMEOUT_S = "60"
BOOT_TIMEOUT_S = "120"


def _provision(knute_bin: Path, *args: str, timeout: float = 400,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    guards = ["--timeout", BOARD_TIMEOUT_S, "--boot-timeout", BOOT_TIMEOUT_S]
    return subprocess.run([str(knute_bin), "provision", *guards, *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env=None if env is None else {**os.environ, **env})


def _devices(path: Path) -> list[int]:
    registry = Registry(str(path))
    try:
        return [d.device_id for d in registry.all()]
    finally:
        registry.close()


def _one_line_failure(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


# ---------------------------------------------------------------- LoRa drivers


def test_lora_board_without_drivers_names_the_mip_command_and_registers_nothing(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--board", "heltec_v3", "--link", "lora", "--registry", str(reg))
    line = _one_line_failure(result, "heltec_v3 (sx1262)", "no module named 'lora'",
                             "nothing was written or registered")
    assert f"`mpremote connect {board.port} mip install lora-sync lora-sx126x`" in line
    assert _devices(reg) == []
    assert not (board.flash_dir / "config.json").exists()


def test_lora_chip_package_without_the_sync_layer_is_caught(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    # lora-sx127x installed, lora-sync not: the package imports, lora.SX1276 is missing.
    lora = board.flash_dir / "lib" / "lora"
    lora.mkdir(parents=True)
    (lora / "__init__.py").write_text("class BaseModem:\n    pass\n")
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--board", "lilygo_t3_v1_6", "--link", "lora")
    line = _one_line_failure(result, "lora has no SX1276")
    assert "mip install lora-sync lora-sx127x" in line


def test_lora_board_with_its_drivers_is_provisioned(knute_bin: Path, board: VirtualBoard,
                                                    tmp_path: Path) -> None:
    lora = board.flash_dir / "lib" / "lora"
    lora.mkdir(parents=True)
    (lora / "__init__.py").write_text("class SX1262:\n    pass\n")
    (board.flash_dir / "air.txt").write_text("")
    wiring = bench_wiring(tmp_path, board, {"bench": {"radio": {"path": "air.txt"},
                                                 "pulse": {"pulse": "pulses.txt"}}})
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--board", "heltec_v3", "--link", "lora", "--config", str(wiring),
                        "--registry", str(reg), "--device-id", "00c0ffee", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["link"] == "lora" and summary["registered_in"] == str(reg)
    assert "device=00c0ffee" in summary["boot"] and "link=lora" in summary["boot"]
    assert _devices(reg) == [0x00C0FFEE]


@pytest.mark.parametrize(("config", "chip"), [
    ({"role": "water_meter", "board": "heltec_v3", "link": {"type": "lora"}}, "sx1262"),
    ({"role": "water_meter", "board": "heltec_v3", "link": {"type": "uart"}}, None),
    ({"role": "radio_bridge", "board": "lilygo_t3_v1_6", "link": {"type": "uart"}}, "sx1276"),
    ({"role": "water_meter", "board": "heltec_v3", "link": {"type": "lora"},
      "radio": {"chip": "sx1278"}}, "sx1278"),
    ({"role": "radio_bridge", "board": "unix", "link": {"type": "uart"}}, None),
])
def test_which_configs_need_a_lora_driver(config: dict[str, object], chip: str | None) -> None:
    assert lora_chip(config) == chip


def test_install_drivers_without_the_network_fails_cleanly(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    """The failure path of --install-drivers: micropython.org cannot be reached (the real
    mpremote is sent through a proxy that is not there, network or not)."""
    reg = tmp_path / "registry.db"
    nowhere = "http://127.0.0.1:9"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--board", "heltec_v3", "--link", "lora", "--registry", str(reg),
                        "--install-drivers", timeout=400,
                        env={"https_proxy": nowhere, "HTTPS_PROXY": nowhere,
                             "http_proxy": nowhere, "HTTP_PROXY": nowhere})
    _one_line_failure(result, f"`mpremote connect {board.port} mip install lora-sync "
                              "lora-sx126x` failed", "nothing was written or registered")
    assert _devices(reg) == []
    assert not (board.flash_dir / "config.json").exists()


# ---------------------------------------------------------------- the boot report


def test_a_node_that_boots_into_safe_mode_is_not_registered_and_check_says_why(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    reg = tmp_path / "registry.db"
    # No bench wiring: the node's UART link cannot start.
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--registry", str(reg), "--device-id", "0000beef")
    _one_line_failure(result, "the node booted into SAFE MODE: link uart did not start: "
                              "bench.uart.link is not wired", "nothing was registered")
    assert _devices(reg) == []

    check = _provision(knute_bin, "--check", "--port", board.port, "--json")
    assert check.returncode == 1, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert not report["ok"]
    assert report["safe_mode"].startswith("link uart did not start")
    assert any("SAFE MODE" in p for p in report["problems"])
    text = _provision(knute_bin, "--check", "--port", board.port)
    assert "PROBLEM     the node is in SAFE MODE: link uart did not start" in text.stdout

    # Wired and provisioned again: it runs, is registered, and --check is content.
    wiring = bench_wiring(tmp_path, board)
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--registry", str(reg), "--device-id", "0000beef",
                        "--config", str(wiring))
    assert result.returncode == 0, result.stderr
    assert "booted      boot role=water_meter device=0000beef" in result.stdout
    assert _devices(reg) == [0xBEEF]
    check = _provision(knute_bin, "--check", "--port", board.port, "--registry", str(reg),
                       "--json")
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["safe_mode"] is None


def test_a_node_waiting_for_its_supply_is_not_registered(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    (board.flash_dir / "battery.txt").write_text("2900\n")
    wiring = bench_wiring(tmp_path, board, {"power": {"brownout_mv": 3300}})
    config = json.loads(wiring.read_text())
    config["bench"]["adc"] = {"battery": "battery.txt"}
    wiring.write_text(json.dumps(config))
    csv_file = tmp_path / "new.csv"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--csv", str(csv_file), "--config", str(wiring))
    _one_line_failure(result, "the node waits for its supply", "2900 mV < 3300 mV",
                      "nothing was registered")
    assert not csv_file.exists()


def test_no_start_stops_the_node_after_its_boot_report(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path, mpremote: Mpremote) -> None:
    reg = tmp_path / "registry.db"
    result = _provision(knute_bin, "--port", board.port, "--kind", "water_meter",
                        "--registry", str(reg), "--config", str(bench_wiring(tmp_path, board)),
                        "--no-start", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["running"] is False and summary["boot"].startswith("boot role=water_meter")
    assert len(_devices(reg)) == 1
    # The trial boot does not count towards the boot-loop guard.
    assert not (board.flash_dir / "state" / "boots.json").exists()
    # The board answers in its REPL: the node is not running.
    got = mpremote(board.port, "exec", "print(6 * 7)")
    assert got.stdout == "42\n", got.stderr


@pytest.mark.parametrize(("lines", "message"), [
    (["knute: boot role=water_meter device=00000001 board=unix",
      "Traceback (most recent call last):", '  File "main.py", line 9, in <module>',
      "MemoryError: memory allocation failed"],
     "the node crashed while booting (MemoryError: memory allocation failed)"),
    (["knute: boot role=water_meter device=00000002 board=unix"],
     "the node booted as device 00000002, not 00000001"),
    (["knute: SAFE MODE: role air_quality did not start: no pm sensor"],
     "the node booted into SAFE MODE: role air_quality did not start: no pm sensor"),
])
def test_boot_watch_failures(lines: list[str], message: str) -> None:
    watch = BootWatch(1)
    with pytest.raises(KnuteError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        for line in lines:
            watch.feed(line)


def test_boot_watch_success_needs_the_boot_line_first() -> None:
    watch = BootWatch(0xC0FFEE)
    assert not watch.feed("knute: heap: 100 bytes used, 2000 free after boot")
    assert not watch.feed("knute: boot role=water_meter device=00c0ffee board=unix port=unix")
    assert watch.feed("knute: heap: 100 bytes used, 2000 free after boot")
    assert "it printed nothing" in BootWatch(1).timeout_message(3)

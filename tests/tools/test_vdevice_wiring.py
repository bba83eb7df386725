"""The README's bench path, every part a real process: `knute vdevice --null-modem`,
`knute gateway run` on the null modem's other end, `knute provision` with the
board's end as its UART link, and `knute gateway tap` showing the node's frames."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from knute.gateway.status import request
from knute.protocol import frame
from knute.tools.rig.gateway import status_and_broker
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker

START = 1_790_006_400          # simulated boot time, on a 6-hour boundary


def _gateway_config(workdir: Path, sock: str, broker: Broker, serial_url: str) -> Path:
    config = workdir / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "bench"
data_dir = "{workdir}"
{status_and_broker(sock, broker.host, broker.port, "city")}
[[serial]]
name = "bench-line"
url = "{serial_url}"
reopen_min_s = 0.2
reopen_max_s = 1
""")
    return config


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_vdevice_null_modem_to_a_gateway_then_tap(knute_bin: Path, mosquitto: Broker,
                                                   tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    vdevice = subprocess.Popen([str(knute_bin), "vdevice", "--null-modem", "--json",
                                "--flash", str(flash)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs: list[subprocess.Popen[Any]] = [vdevice]
    sock_dir = tempfile.TemporaryDirectory(prefix="kgw", dir="/tmp")   # short socket path
    try:
        assert vdevice.stdout is not None
        info = json.loads(vdevice.stdout.readline())
        ends = info["null_modem"]
        sock = f"{sock_dir.name}/gw.sock"
        config = _gateway_config(tmp_path, sock, mosquitto, ends["gateway"])
        with (tmp_path / "gateway.log").open("wb") as log:
            gateway = subprocess.Popen([str(knute_bin), "gateway", "run", "--config",
                                        str(config)], stdout=log, stderr=subprocess.STDOUT)
        procs.append(gateway)

        def gateway_up() -> bool:
            try:
                return bool(request(sock, {"cmd": "status"}))
            except OSError:
                return False

        wait_for(gateway_up, 30, "the gateway's status socket")

        (flash / "pulses.txt").write_text(f"@{START + 600} 1234\n")
        wiring = tmp_path / "wiring.json"
        wiring.write_text(json.dumps({
            "jitter_s": 1,
            "water": {"sends_per_day": 4, "profile_len": 6},
            "bench": {"uart": {"link": ends["board"]}, "pulse": {"pulse": "pulses.txt"},
                      "time_scale": 7200, "start_time": START, "seed": 3},
        }))
        tap = subprocess.Popen([str(knute_bin), "gateway", "tap", "--config", str(config),
                                "--json", "--for", "90"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(tap)
        result = subprocess.run(
            [str(knute_bin), "provision", "--port", info["port"], "--kind", "water_meter",
             "--device-id", "00c0ffee", "--registry", str(tmp_path / "registry.db"),
             "--config", str(wiring), "--show-key", "--json"],
            capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        key = bytes.fromhex(json.loads(result.stdout)["key"])
        assert request(sock, {"cmd": "reload"})["ok"]

        # The tap shows the node's frames; the first may come before the reload.
        assert tap.stdout is not None
        deadline = time.monotonic() + 60
        accepted = None
        seen: list[dict[str, Any]] = []
        while accepted is None and time.monotonic() < deadline:
            if not select.select([tap.stdout], [], [], 1)[0]:
                continue
            line = tap.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            seen.append(event)
            if event["event"] == "accepted":
                accepted = event
        assert accepted is not None, (seen, (tmp_path / "gateway.log").read_text())
        reading = accepted["reading"]
        assert reading["device"] == "00c0ffee" and reading["source"] == "serial"
        assert reading["readings"]["index"]["value"] == 1234
        assert frame.decode(bytes.fromhex(accepted["hex"]), key)["device_id"] == 0x00C0FFEE
    finally:
        for proc in reversed(procs):
            _stop(proc)
        sock_dir.cleanup()

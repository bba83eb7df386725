"""A technician's whole path: virtual board, knute provision with the real mpremote,
the real firmware on the board, the gateway, Mosquitto, and the backend's reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.nullmodem import NullModem
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for
from knute.tools.sim.vdevice import VirtualBoard
from tests.conftest import Broker

DEVICE = "00c0ffee"
START = 1_790_006_400          # simulated boot time, on a 6-hour boundary


def _gateway_config(workdir: Path, broker: Broker, serial_path: str, status_socket: str) -> str:
    return f"""
[gateway]
id = "e2e"
data_dir = "{workdir}"
registry = "registry.db"

[spool]
path = "spool.db"

{status_and_broker(status_socket, broker.host, broker.port, "city")}

[[serial]]
name = "node-line"
url = "{serial_path}"
reopen_min_s = 0.2
reopen_max_s = 1
"""


# On both unix-port builds: the 32-bit one is what a board runs (tools/rig/upy.py).
@pytest.mark.parametrize("bits", [64, 32], ids=["upy64", "upy32"])
def test_provisioned_node_reading_reaches_the_backend(
    knute_bin: Path, mosquitto: Broker, tmp_path: Path, bits: int
) -> None:
    backend = Subscriber(mosquitto.host, mosquitto.port, f"city/water_meter/{DEVICE}/up",
                         client_id="e2e-backend")

    def with_1234() -> list[dict[str, Any]]:
        return [d for d in backend.readings() if d["readings"]["index"]["value"] == 1234]

    gateway = GatewayProcess(tmp_path)
    # The board's flash may open ptys: its UART is one end of the null modem.
    with NullModem() as line, VirtualBoard(binds=("/dev/pts",), bits=bits) as board:
        try:
            gateway.write_config(_gateway_config(tmp_path, mosquitto, line.b_path,
                                                 gateway.status_socket))
            # The gateway runs before the node exists: it learns the device on SIGHUP.
            (tmp_path / "registry.db").unlink(missing_ok=True)
            gateway.start()
            # 1,234 litres flow in the first simulated hour.
            (board.flash_dir / "pulses.txt").write_text(f"@{START + 600} 1234\n")
            wiring = tmp_path / "bench.json"
            # Every frame carries a day of hours: a loaded machine that holds the
            # board up past a send (an hour is 1 real second here) delays the
            # reading, it cannot push the flow's hour out of the profile.
            wiring.write_text(json.dumps({
                "jitter_s": 1,
                "water": {"sends_per_day": 4, "profile_len": 24, "litres_per_pulse": 1},
                "bench": {"uart": {"link": line.a_path}, "pulse": {"pulse": "pulses.txt"},
                          "time_scale": 3600, "start_time": START, "seed": 3},
            }))
            result = subprocess.run(
                [str(knute_bin), "provision", "--port", board.port, "--kind", "water_meter",
                 "--device-id", DEVICE, "--registry", str(tmp_path / "registry.db"),
                 "--config", str(wiring), "--json"],
                capture_output=True, text=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            summary = json.loads(result.stdout)
            assert summary["device"] == DEVICE and "key" not in summary
            assert os.stat(tmp_path / "registry.db").st_mode & 0o077 == 0
            gateway.signal(signal.SIGHUP)               # reload the registry

            try:
                reading = wait_for(with_1234, 60, "a reading with index 1234")[0]
            except WaitTimeout as exc:
                raise AssertionError(f"{exc}; got {backend.readings()}\n"
                                     + gateway.log_text()) from None
        finally:
            gateway.stop(timeout=20)
            gateway.close()
            backend.close()
    assert reading["device"] == DEVICE and reading["kind"] == "water_meter"
    assert reading["id"] == f"{DEVICE}:{reading['fcnt']}"
    assert reading["readings"]["index"]["unit"] == "L"
    # The hourly profile holds the 1,234 litres in the hour they flowed, and nothing else.
    litres = [slot["litres"] for slot in reading["profile"]]
    assert sum(litres) == 1234 and 1234 in litres
    assert reading["receivers"][0]["source"] == "node-line"
    assert time.time() - 3600 < time.mktime(time.strptime(
        reading["received_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone < time.time() + 60

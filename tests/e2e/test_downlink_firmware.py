"""A command published on Mosquitto reaches a node running the real firmware on the
unix port, over its UART: the gateway sends it in the node's receive window, the
node applies it, its next uplink reports it, and the status topic follows the
command to ``applied``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.wait import wait_for
from knute.tools.sim.firmware_nodes import FirmwareNode, start_boards
from tests.conftest import Broker
from tests.e2e.test_downlink_gateway import Watcher


@contextlib.contextmanager
def board_on_gateway(tmp_path: Path, broker: Broker, gateway_id: str
                     ) -> Iterator[tuple[FirmwareNode, GatewayProcess, Watcher]]:
    """One provisioned board running the real firmware (not yet started) on the UART of
    a gateway (configured, not started) that takes commands from ``broker``, and a
    watcher of the command topics; all closed at the end."""
    registry = tmp_path / "registry.db"
    boards = start_boards(1, tmp_path / "boards", str(registry), time.time(), 14400.0)
    gw = GatewayProcess(tmp_path / "gw")
    watcher = Watcher(broker)
    board = boards[0]
    try:
        gw.write_config(f"""
[gateway]
id = "{gateway_id}"
registry = "{registry}"
{status_and_broker(gw.status_socket, "127.0.0.1", broker.port, "t")}
[[serial]]
name = "node"
url = "{board.uart_path}"
""")
        yield board, gw, watcher
    finally:
        gw.close()
        watcher.close()
        for b in boards:
            b.close()


def test_mqtt_command_is_applied_by_the_real_firmware_over_uart(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    with board_on_gateway(tmp_path, mosquitto, "gw-fw") as (board, gw, watcher):
        gw.start()
        wait_for(lambda: gw.status()["downlinks"]["commands_topic"]["subscribed"], 30,
                 "the command topics subscribed")
        topic = f"t/water_meter/{board.device_id:08x}/down"
        watcher.command(topic, {"id": "fw-1", "command": "config",
                                "values": {"water.leak_hours": 5}})
        wait_for(lambda: watcher.states("fw-1") == ["queued"], 20, "fw-1 queued")
        board.run()
        wait_for(lambda: "applied" in watcher.states("fw-1"), 90, "fw-1 applied")
        print(f"fw-1: {watcher.states('fw-1')}")
        assert watcher.states("fw-1")[-2:] == ["sent", "applied"]
        cfg = json.loads((tmp_path / "boards" / "board-0" / "config.json").read_text())
        assert cfg["water"]["leak_hours"] == 5
        assert gw.stop() == 0

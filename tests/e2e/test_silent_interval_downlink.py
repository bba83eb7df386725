"""A node's send interval follows it from provisioning through a config downlink.

Real processes: ``knute provision`` puts the firmware on a virtual board and
registers the node with the send interval of its config.json (4 sends a day:
6 h); a config command over Mosquitto changes ``water.sends_per_day`` to 8; the
node, running the real firmware on the unix port, applies it and reports it,
and only then does the gateway's registry hold the new interval (3 h), which
the gateway's silent-node alarm counts by from then on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.e2e.test_downlink_firmware import board_on_gateway


def test_an_applied_sends_per_day_moves_the_registered_interval(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    with board_on_gateway(tmp_path, mosquitto, "gw-interval") as (board, gw, watcher):
        device = f"{board.device_id:08x}"

        def shown() -> dict[str, Any]:
            out: dict[str, Any] = json.loads(gw.cli("devices", "show", device, "--json").stdout)
            return out

        assert shown()["interval_s"] == 6 * 3600.0          # from provisioning
        gw.start()
        wait_for(lambda: gw.status()["downlinks"]["commands_topic"]["subscribed"], 30,
                 "the command topics subscribed")
        reloads = gw.status()["registry"]["reloads"]
        watcher.command(f"t/water_meter/{device}/down",
                        {"id": "spd-8", "command": "config",
                         "values": {"water.sends_per_day": 8}})
        wait_for(lambda: watcher.states("spd-8") == ["queued"], 20, "spd-8 queued")
        # Queued (and later sent) is not applied: the registry keeps the old interval.
        assert shown()["interval_s"] == 6 * 3600.0
        board.run()
        wait_for(lambda: "applied" in watcher.states("spd-8"), 90, "spd-8 applied")
        cfg = json.loads((tmp_path / "boards" / "board-0" / "config.json").read_text())
        assert cfg["water"]["sends_per_day"] == 8
        assert shown()["interval_s"] == 3 * 3600.0
        # The gateway re-reads its devices (and so the interval) without a signal.
        wait_for(lambda: gw.status()["registry"]["reloads"] > reloads, 30,
                 "the gateway to re-read its devices")
        assert gw.stop() == 0

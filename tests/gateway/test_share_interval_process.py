"""The shared registry carries each device's send interval (real gateway, real Mosquitto).

``knute devices share`` from the operator's registry gives a running gateway
the devices with their intervals (the silent-node alarm counts by them), a
changed interval is published again and followed, and sharing twice
publishes nothing.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from knute.gateway.registry import Registry
from knute.tools.bench.reliability.harness import GatewayProc
from knute.tools.rig.broker import free_port
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_share_process import SHARE, WAIT_S, knute

SLOW, PLAIN = 0x31000001, 0x31000002
KEY = bytes(range(16))


def intervals(gw: GatewayProc) -> dict[int, float | None]:
    reg = Registry(gw.registry_path)
    try:
        return {d.device_id: d.interval_s for d in reg.all()}
    finally:
        reg.close()


def has(gw: GatewayProc, want: dict[int, float | None]) -> bool:
    return intervals(gw) == want


def test_the_share_carries_and_updates_the_interval(mosquitto: Broker, knute_bin: Path,
                                                    tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path / "gw-a", mosquitto.port, [], udp_port=free_port(),
                     gateway_id="gw-a", mqtt_extra=SHARE)
    operator = tmp_path / "operator.db"
    try:
        out = knute(knute_bin, "share-key", "--config", str(gw.config), "--json")
        target = f"gw-a={json.loads(out.stdout)['public_key']}"
        op = Registry(str(operator))
        op.add(SLOW, "water_meter", KEY, interval_s=8 * 3600)
        op.add(PLAIN, "water_meter", bytes(range(1, 17)))
        op.close()

        def share() -> dict[str, Any]:
            done = knute(knute_bin, "share", "--config", str(gw.config), "--registry",
                         str(operator), "--json", "--gateway", target)
            result: dict[str, Any] = json.loads(done.stdout)
            return result

        gw.start()
        assert share()["gw-a"]["published"] == 2
        wait_for(partial(has, gw, {SLOW: 8 * 3600.0, PLAIN: None}), WAIT_S,
                 "the gateway to get the devices and their intervals")
        assert share()["gw-a"] == {"published": 0, "removed": 0, "unchanged": 2}
        # The operator moves the meter to every 15 minutes: published again, followed.
        op = Registry(str(operator))
        op.import_csv(f"device_id,kind,key,interval_s\n{SLOW:08x},water_meter,{KEY.hex()},900\n",
                      update=True)
        op.close()
        assert share()["gw-a"] == {"published": 1, "removed": 0, "unchanged": 1}
        wait_for(partial(has, gw, {SLOW: 900.0, PLAIN: None}), WAIT_S,
                 "the gateway to follow the new interval")
        assert gw.stop() == 0
    finally:
        gw.close()

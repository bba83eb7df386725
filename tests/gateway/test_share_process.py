"""One registry for several gateways over a real Mosquitto, with real gateway processes.

- ``knute devices share`` from the operator's registry reaches a running
  gateway within seconds, and a gateway that was offline catches up when it
  starts; adds, changes and removals all arrive; sharing twice publishes
  nothing the second time; a gateway that lost its registry file gets it back;
- no key appears in the clear in anything the broker carried;
- a bad share message is reported and ignored; the gateway keeps running;
- two gateways with different keys for one device both report the conflict,
  and the locally registered key is kept (never silently resolved);
- ``knute devices export --seal-for`` then ``import`` on the gateway it was
  sealed for gives the same devices, and importing it again changes nothing.
"""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from knute.gateway.registry import Registry
from knute.tools.bench.reliability.harness import GatewayProc
from knute.tools.bench.reliability.results import PREFIX, key_leaks
from knute.tools.rig.broker import free_port
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker

WAIT_S = 60.0
KEYS = {0x30000001: bytes(range(16)), 0x30000002: bytes(range(1, 17)),
        0x30000003: bytes(range(2, 18))}
CLASH = 0x30000009
SHARE = '[share]\nkey = "share.key"\n'


def knute(knute_bin: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(knute_bin), "devices", *args], capture_output=True, text=True,
                         timeout=120)
    assert not check or out.returncode == 0, out.stderr
    return out


def names(gw: GatewayProc) -> dict[int, str]:
    reg = Registry(gw.registry_path)
    try:
        return {d.device_id: d.name for d in reg.all()}
    finally:
        reg.close()


def has_names(gw: GatewayProc, want: dict[int, str]) -> bool:
    return names(gw) == want


def reports_conflict(gw: GatewayProc, device_id: int) -> bool:
    return f"{device_id:08x}" in {c["device"] for c in share_status(gw)["conflicts"]}


def share_status(gw: GatewayProc) -> dict[str, Any]:
    share: dict[str, Any] = gw.status()["registry"]["share"]
    return share


def test_registry_shared_by_two_gateways(mosquitto: Broker, knute_bin: Path,
                                         tmp_path: Path) -> None:
    carried = Subscriber(mosquitto.host, mosquitto.port, f"{PREFIX}/#", client_id="carried")
    gws = {gid: GatewayProc(tmp_path / gid, mosquitto.port, [], udp_port=free_port(),
                            gateway_id=gid, mqtt_extra=SHARE) for gid in ("gw-a", "gw-b")}
    operator = tmp_path / "operator.db"
    try:
        public = {}
        for gid, gw in gws.items():
            out = knute(knute_bin, "share-key", "--config", str(gw.config), "--json")
            public[gid] = json.loads(out.stdout)["public_key"]
        op = Registry(str(operator))
        for device_id, key in KEYS.items():
            op.add(device_id, "water_meter", key, name=f"meter {device_id:x}")
        op.close()
        targets = [a for gid, pub in public.items() for a in ("--gateway", f"{gid}={pub}")]

        def share() -> dict[str, Any]:
            out = knute(knute_bin, "share", "--config", str(gws["gw-a"].config),
                        "--registry", str(operator), "--json", *targets)
            result: dict[str, Any] = json.loads(out.stdout)
            return result

        gws["gw-a"].start()
        assert share()["gw-a"]["published"] == 3
        wait_for(lambda: len(names(gws["gw-a"])) == 3, WAIT_S, "gw-a to get the devices")
        wait_for(lambda: gws["gw-a"].status()["devices"] == 3, WAIT_S, "gw-a to serve them")
        # gw-b was offline: it catches up when it starts.
        gws["gw-b"].start()
        wait_for(lambda: len(names(gws["gw-b"])) == 3, WAIT_S, "gw-b to catch up")
        assert share() == {g: {"published": 0, "removed": 0, "unchanged": 3} for g in gws}

        # Change one, remove one, add one while gw-b is stopped: gw-a follows at once,
        # gw-b when it returns (the removal too: its tombstone is retained).
        assert gws["gw-b"].stop() == 0
        op = Registry(str(operator))
        op.remove(0x30000003)
        op.add(0x30000004, "air_quality", bytes(range(3, 19)), name="air")
        op.import_csv("device_id,kind,key,name\n30000001,water_meter,"
                      f"{KEYS[0x30000001].hex()},renamed\n", update=True)
        op.close()
        assert share()["gw-b"] == {"published": 2, "removed": 1, "unchanged": 1}
        want = {0x30000001: "renamed", 0x30000002: "meter 30000002", 0x30000004: "air"}
        wait_for(partial(has_names, gws["gw-a"], want), WAIT_S, "the change at gw-a")
        gws["gw-b"].start()
        wait_for(partial(has_names, gws["gw-b"], want), WAIT_S, "the change at gw-b")
        # A gateway whose registry file is lost gets it all back from the share.
        assert gws["gw-a"].stop() == 0
        for suffix in ("", "-wal", "-shm"):
            Path(gws["gw-a"].registry_path + suffix).unlink(missing_ok=True)
        gws["gw-a"].start()
        wait_for(partial(has_names, gws["gw-a"], want), WAIT_S, "gw-a's registry rebuilt")

        # A bad share message is reported and ignored.
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-share")
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        pub.publish(f"{PREFIX}/registry/gw-a/30000007", b'{"v": 1, "op": "put"}', qos=1,
                    retain=True).wait_for_publish(10)
        wait_for(lambda: share_status(gws["gw-a"])["bad_messages"] == 1, WAIT_S,
                 "the bad message reported")
        assert gws["gw-a"].check()

        # gw-b registers a device locally; the operator shares it with another key.
        knute(knute_bin, "add", f"{CLASH:08x}", "--kind", "water_meter", "--key",
              bytes(range(100, 116)).hex(), "--registry", gws["gw-b"].registry_path)
        op = Registry(str(operator))
        op.add(CLASH, "water_meter", bytes(range(200, 216)), name="clash")
        op.close()
        share()
        for gid, gw in gws.items():
            wait_for(partial(reports_conflict, gw, CLASH), WAIT_S,
                     f"{gid} to report the conflict")
        text = gws["gw-b"].cli("gateway", "status").stdout
        assert "registry share:" in text and f"{CLASH:08x}" in text, text
        reg = Registry(gws["gw-b"].registry_path)
        try:
            kept = reg.get(CLASH)
            assert kept is not None and kept.key == bytes(range(100, 116))
        finally:
            reg.close()
        pub.loop_stop()
        pub.disconnect()

        # Export sealed for gw-b, import there: same devices; again: nothing changes.
        export = tmp_path / "export.csv"
        knute(knute_bin, "export", "--registry", str(operator), "--seal-for",
              public["gw-b"], "--out", str(export))
        fresh = tmp_path / "fresh.db"
        out = knute(knute_bin, "import", str(export), "--registry", str(fresh), "--config",
                    str(gws["gw-b"].config), "--json")
        assert json.loads(out.stdout) == {"imported": 4}
        again = knute(knute_bin, "import", str(export), "--registry", str(fresh), "--config",
                      str(gws["gw-b"].config), "--json")
        assert json.loads(again.stdout) == {"imported": 0, "unchanged": 4}
        wrong = knute(knute_bin, "import", str(export), "--registry", str(fresh), "--config",
                      str(gws["gw-a"].config), check=False)
        assert wrong.returncode == 2 and "line 2" in wrong.stderr
        assert wrong.stderr.strip().count("\n") == 0

        every_key = [*KEYS.values(), bytes(range(3, 19)), bytes(range(100, 116)),
                     bytes(range(200, 216))]
        texts = {m.topic: m.payload.decode(errors="replace") for m in carried.messages()}
        texts["export"] = export.read_text()
        assert key_leaks(texts, every_key) == []
        for gw in gws.values():
            assert gw.stop() == 0
            assert "Traceback" not in gw.log_text()
    finally:
        carried.close()
        for gw in gws.values():
            gw.close()

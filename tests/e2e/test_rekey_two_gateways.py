"""Key rotation with two gateway processes, each with its own registry (the device shared
to both over the broker, its key sealed for each), ``[downlinks] gateways = 2`` and each
other's share keys in ``[share.peers]``, Mosquitto between them, and a LoRa water meter
running the real firmware on the unix port, heard by both through their own simulated
concentrators.

``knute devices send 00001234 rekey`` at gateway A: A offers the next key to B
(sealed for B), and the rekey leaves only once B holds it; B is killed (kill -9)
right after it took the key and started again; the node takes the new key, both
gateways commit it, ``rekey_done`` goes out once, the status topic reaches
``applied``, and both gateways go on accepting the node's uplinks under the new
key.
"""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

from knute.gateway.registry import Registry
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.node import KEY_HEX, NO_MORE
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd_radio import ConcentratorThread, NodeRadio, RadioConcentrator
from tests.conftest import Broker, free_port
from tests.e2e.lora_meter import DEV, FREQ, SF, lora_meter
from tests.e2e.test_downlink_gateway import Watcher
from tests.firmware.conftest import NodeFactory, bench_node, flash_lib
from tests.upybuild import micropython_bin, upy_bits

__all__ = ["bench_node", "flash_lib", "micropython_bin", "upy_bits"]

NAMES = ("gw-a", "gw-b")


def _config(gw: GatewayProcess, name: str, broker: Broker, port: int,
            peers: dict[str, str]) -> None:
    table = "".join(f'{peer} = "{key}"\n' for peer, key in peers.items())
    gw.write_test_config(name, broker.port, f"""
[downlinks]
gateways = 2
gateway_index = {NAMES.index(name)}
gather_ms = 300
[share]
key = "share.key"
{"[share.peers]" if peers else ""}
{table}
[[packet_forwarder]]
name = "lora"
listen = "127.0.0.1:{port}"
""")


def _registry_key(path: Path) -> tuple[str, Any]:
    """(the device's key, its pending next key) in one gateway's registry."""
    db = sqlite3.connect(str(path), timeout=10)
    try:
        key = db.execute("SELECT key FROM devices WHERE device_id = ?", (DEV,)).fetchone()[0]
        row = db.execute("SELECT next_key FROM dl_devices WHERE device_id = ?",
                         (DEV,)).fetchone()
        return bytes(key).hex(), None if row is None or row[0] is None else bytes(row[0]).hex()
    finally:
        db.close()


def _states(watcher: Watcher, command: str) -> list[str]:
    """The states published so far for the commands ``command``."""
    return [m["state"] for m in list(watcher.messages) if m.get("command") == command]


def _node_keys(meter: Any) -> tuple[str, Any]:
    cfg = json.loads((meter.dir / "config.json").read_text())
    return str(cfg["key"]), cfg.get("key_next")


def test_a_key_rotation_reaches_both_gateways_before_the_node_and_both_follow_it(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, bench_node: NodeFactory) -> None:
    meter = lora_meter(bench_node)
    gws: dict[str, GatewayProcess] = {}
    ports: dict[str, int] = {}
    publics: dict[str, str] = {}
    for name in NAMES:
        gws[name] = GatewayProcess(tmp_path / name)
        ports[name] = free_port()
        _config(gws[name], name, mosquitto, ports[name], {})
        out = gws[name].cli("devices", "share-key", "--json")
        publics[name] = json.loads(out.stdout)["public_key"]
    for name in NAMES:                       # each knows the other's share key
        _config(gws[name], name, mosquitto, ports[name],
                {p: publics[p] for p in NAMES if p != name})
    concs = [RadioConcentrator("127.0.0.1", ports[name],
                               [NodeRadio(str(meter.dir / "air.txt"),
                                          str(meter.dir / "dl.txt"), FREQ, SF)],
                               eui=bytes([0xAA, 0x55, 0x5A, 0, 0, 0, 0x0B, i + 1]),
                               pull_every_s=0.5)
             for i, name in enumerate(NAMES)]
    stepping = ConcentratorThread(*concs)
    watcher = Watcher(mosquitto)
    try:
        for gw in gws.values():
            gw.start()
        operator = Registry(str(tmp_path / "operator.db"))
        operator.add(DEV, "water_meter", bytes.fromhex(KEY_HEX), name="meter")
        operator.close()
        gws["gw-a"].cli("devices", "share", "--registry", str(tmp_path / "operator.db"),
                        *[a for n in NAMES for a in ("--gateway", f"{n}={publics[n]}")])

        def ready(gw: GatewayProcess) -> bool:
            st = gw.status()
            city = st["downlinks"]["city"]
            return bool(st["devices"] == 1 and city["subscribed"]
                        and st["downlinks"]["rekey"]["peers"])

        for name, gw in gws.items():
            wait_for(partial(ready, gw), 30, f"{name} serving the device, channel up")
        stepping.start()
        meter.start()

        def accepted(name: str) -> int:
            return int(gws[name].status()["totals"].get("accepted", 0))

        wait_for(lambda: all(accepted(n) >= 1 for n in NAMES), 60, "both hear the node")
        out = gws["gw-a"].cli("devices", "send", f"{DEV:08x}", "rekey", "--id", "rk-1",
                              "--json")
        assert json.loads(out.stdout)[0]["state"] == "queued"
        # B holds the next key before the node is told anything.
        registries = {n: tmp_path / n / "registry.db" for n in NAMES}
        try:
            wait_for(lambda: _registry_key(registries["gw-b"])[1] is not None
                     or _registry_key(registries["gw-b"])[0] != KEY_HEX, 60,
                     "gw-b to hold the next key")
            # kill -9 of B as soon as it holds the key (its `hold` published or not):
            # the key and the answer are in its registry, and it comes back to them.
            gws["gw-b"].kill()
            gws["gw-b"].start()
            wait_for(partial(ready, gws["gw-b"]), 30, "gw-b back")
            wait_for(lambda: "applied" in watcher.states("rk-1"), 120, "the rekey applied")
            wait_for(lambda: _node_keys(meter)[0] != KEY_HEX and _node_keys(meter)[1] is None,
                     120, "the node to drop its old key")
        except AssertionError:
            raise AssertionError(f"{watcher.messages}\n{meter.console()[-3000:]}\n"
                                 f"{gws['gw-a'].log_tail(40)}\n{gws['gw-b'].log_tail(40)}"
                                 ) from None
        new_key = _node_keys(meter)[0]
        wait_for(lambda: all(_registry_key(registries[n]) == (new_key, None) for n in NAMES),
                 60, "both gateways to hold the new key as the device's key")
        # The rotation's last word reported, nothing more goes to the node: its later
        # receive windows end at once instead of each waiting out rx_wait_real_ms for an
        # answer nobody sends (a downlink sent after this would go unheard).
        wait_for(lambda: "applied" in _states(watcher, "rekey_done"), 60,
                 "rekey_done applied")
        with (meter.dir / "dl.txt").open("a") as rx_file:
            rx_file.write(NO_MORE)
        # Both go on accepting the node, under the new key only now.
        base = {n: accepted(n) for n in NAMES}
        wait_for(lambda: all(accepted(n) >= base[n] + 2 for n in NAMES), 90,
                 "both to accept the node's next uplinks")
        for name in NAMES:
            st = gws[name].status()
            assert st["rejected"].get("frame_tag", 0) == 0, (name, st["rejected"])
            assert st["downlinks"]["rekey"]["bad_messages"] == 0
        # Since its restart B has read A's retained word (the offer again, or the commit
        # that superseded it), whichever it was by then.
        b_stats = gws["gw-b"].status()["downlinks"]["rekey"]
        assert b_stats["offers_held"] + b_stats["commits_heard"] >= 1, b_stats
        meter.close()
        states = watcher.states("rk-1")
        print(f"rk-1: {states}; gw-b rotation figures {b_stats}")
        assert states.count("applied") == 1 and "sent" in states
        done = [m for m in watcher.messages if m.get("command") == "rekey_done"]
        assert [m["state"] for m in done].count("sent") == 1, done
        assert [m["state"] for m in done].count("applied") == 1, done
        for gw in gws.values():
            assert gw.stop() == 0
    finally:
        stepping.stop()
        for conc in concs:
            conc.close()
        for gw in gws.values():
            gw.close()
        watcher.close()

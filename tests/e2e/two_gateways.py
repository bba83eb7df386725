"""Two gateway processes for the end-to-end tests, each with its own registry and its own
packet forwarder, ``[downlinks] gateways = 2``: the node's device shared to both over the
broker, its key sealed for each."""

from __future__ import annotations

import json
from pathlib import Path

from knute.gateway.registry import Registry
from knute.tools.rig.gateway import GatewayProcess
from tests.conftest import free_port
from tests.gateway.pf_client import PacketForwarder

KEY = bytes(range(16))
METER = 0x00001234
NAMES = ("gw-a", "gw-b")


def _gateway(root: Path, name: str, index: int, mqtt_port: int, gather_ms: int,
             downlinks: str) -> tuple[GatewayProcess, int]:
    gw = GatewayProcess(root)
    port = free_port()
    gw.write_test_config(name, mqtt_port, f"""
[downlinks]
gateways = 2
gateway_index = {index}
gather_ms = {gather_ms}
{downlinks}[share]
key = "share.key"
[[packet_forwarder]]
name = "concentrator"
listen = "127.0.0.1:{port}"
""")
    return gw, port


def gateway_pair(root: Path, mqtt_port: int, gather_ms: int, downlinks: str = ""
                 ) -> tuple[dict[str, GatewayProcess], dict[str, PacketForwarder]]:
    """Gateways gw-a and gw-b configured (not started) under ``root``, ``downlinks`` more
    lines of their ``[downlinks]``, and the packet forwarder of each, by name."""
    gws: dict[str, GatewayProcess] = {}
    pfs: dict[str, PacketForwarder] = {}
    for index, name in enumerate(NAMES):
        gw, port = _gateway(root / name, name, index, mqtt_port, gather_ms, downlinks)
        gws[name] = gw
        pfs[name] = PacketForwarder("127.0.0.1", port,
                                    eui=bytes([0xAA, 0, 0, 0, 0, 0, 0, index + 1]))
    return gws, pfs


def close_pair(gws: dict[str, GatewayProcess], pfs: dict[str, PacketForwarder]) -> None:
    """Both gateways stopped and both packet forwarders closed (a test's cleanup)."""
    for gw in gws.values():
        gw.close()
    for pf in pfs.values():
        pf.close()


def share_keys(gws: dict[str, GatewayProcess]) -> list[str]:
    """Each gateway's share key made; the ``--gateway`` arguments of ``devices share``."""
    targets = []
    for name, gw in gws.items():
        out = gw.cli("devices", "share-key", "--json")
        targets += ["--gateway", f"{name}={json.loads(out.stdout)['public_key']}"]
    return targets


def share(gw: GatewayProcess, operator: Path, targets: list[str]) -> None:
    """The operator's registry with the node, shared over the broker: each gateway
    gets the device, its key sealed for that gateway, into its own registry."""
    op = Registry(str(operator))
    op.add(METER, "water_meter", KEY, name="meter")
    op.close()
    gw.cli("devices", "share", "--registry", str(operator), *targets)


def start_and_share(gws: dict[str, GatewayProcess], operator: Path) -> None:
    """Share keys made, both gateways started, the node shared to both through gw-a."""
    targets = share_keys(gws)
    for gw in gws.values():
        gw.start()
    share(gws["gw-a"], operator, targets)

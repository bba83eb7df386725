"""``knute simulate`` with several ``--udp`` gateways: two real gateways on one broker."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from knute.tools.bench.reliability.harness import Backend, GatewayProc
from knute.tools.rig.broker import Broker, free_port
from knute.tools.rig.wait import wait_for
from knute.tools.sim.fleet import Fleet


def test_simulate_spreads_forwarders_over_two_gateways(
        knute_bin: Path, mosquitto: Broker, tmp_path: Path) -> None:
    seed, meters, air = 7, 30, 4
    # The same seed and start give the same devices and keys as the fleet simulate builds.
    start = float(int(time.time()))
    fleet = Fleet(meters, air, start=start, seed=seed)
    devices = [(n.device_id, n.kind, n.key) for n in fleet.nodes]
    backend = Backend(mosquitto.host, mosquitto.port)
    backend.connect()
    ports = [free_port(), free_port()]
    gws = [GatewayProc(tmp_path / f"gw-{n}", mosquitto.port, devices, udp_port=port,
                       gateway_id=f"sim-{n}", log_level="warning")
           for n, port in enumerate(ports)]
    try:
        for gw in gws:
            gw.start()
        out = subprocess.run(
            [str(knute_bin), "simulate", "--meters", str(meters), "--air", str(air),
             "--seed", str(seed), "--start", str(start), "--speed", "20000", "--for", "3",
             "--forwarders", "4",
             "--udp", f"127.0.0.1:{ports[0]}", "--udp", f"127.0.0.1:{ports[1]}", "--json"],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        per_gw = summary["udp_per_gateway"]
        assert [g["address"] for g in per_gw] == [f"127.0.0.1:{p}" for p in ports]
        assert [g["forwarders"] for g in per_gw] == [2, 2]
        assert all(g["packets"] > 0 for g in per_gw)
        assert sum(g["packets"] for g in per_gw) == summary["udp_packets"]
        valid = summary["valid"]
        assert valid > 20

        def delivered() -> bool:
            return backend.delivered() >= valid and not any(
                gw.status()["spool"]["depth"] for gw in gws)

        wait_for(delivered, 60, "every valid frame delivered")
        backend.quiet(0.3)
        accepted = [int(gw.status()["spool"]["accepted_total"]) for gw in gws]
        assert all(a > 0 for a in accepted), accepted
        # Every reading once, or again only under the same id (cross-gateway copies).
        assert backend.delivered() == valid
        assert backend.delivered() + backend.duplicates() == sum(accepted)
        assert {json.loads(p)["device"] for p in backend.payloads.values()} <= {
            f"{d:08x}" for d, _, _ in devices}
    finally:
        for gw in gws:
            gw.close()
        backend.disconnect()

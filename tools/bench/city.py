"""``knute bench city``: several gateway processes on one broker, each with its own fleet.

Each gateway is ``knute gateway run`` (``learn_counters = true``, so every
gateway also takes in every other gateway's readings, as in a city), fed by a
simulated fleet of its own (real encrypted frames over a pty and the UDP
packet-forwarder protocol, tools/bench/reliability/harness.FleetDriver) at
``--rate`` transmissions a second, for ``--seconds``. One backend subscriber
counts what arrives. The baseline is one gateway alone with the same fleet
and rate, measured first in the same run.

Figures per gateway: frames accepted per second, readings delivered per
second, the gateway process's CPU seconds per 1,000 accepted frames; for the
run: lost (accepted and never delivered) and duplicates (always the same id
and bytes). On a 2-core machine the fleets, the broker and the gateways share
the CPU, so the figures are a floor for a gateway on its own box.

``--load simulate`` generates the load with one ``knute simulate`` process
instead: the fleets of every gateway as one city (``--meters`` per gateway),
``--rate`` times ``--gateways`` transmissions a second, sent from one
simulated packet forwarder per gateway whose coverage overlaps (``--udp``
repeated), so a packet heard by several forwarders reaches several gateways.
Lost is then every valid frame simulate sent that never arrived; duplicates
are cross-gateway copies, and ``mismatched_duplicates`` counts copies whose
reading (device, counter, values) differs from the first, not the receiver
metadata every gateway adds.

``--rabbitmq`` runs both on a three-node RabbitMQ cluster with its MQTT plugin
(tools/rig/rabbitmq.py) instead of one Mosquitto: each gateway's ``[mqtt]
brokers`` lists the three nodes, gateway n preferring node n mod 3, and the
backend is a persistent subscriber reaching the cluster through a balancer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the city benchmark."""
    parser.add_argument("--gateways", type=int, default=3, help="gateway processes (default 3)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="transmissions a second per gateway's fleet (default 300)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the fleets send (default 20)")
    parser.add_argument("--meters", type=int, default=200, help="meters per fleet (default 200)")
    parser.add_argument("--load", choices=("fleet", "simulate"), default="fleet",
                        help="fleet: an in-process fleet per gateway (default); simulate: one "
                        "knute simulate process sending to every gateway's UDP port")
    parser.add_argument("--rabbitmq", action="store_true",
                        help="run on a three-node RabbitMQ cluster instead of one Mosquitto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _per_gateway(gws: Sequence[Any], cpu0: Sequence[float], sent: Sequence[int],
                 sent_s: float, done_s: float, *, own_copies: bool) -> list[dict[str, Any]]:
    """One row per gateway: what it was sent, accepted, delivered and its CPU.

    ``own_copies``: delivered/s counts what the gateway itself forwarded (with
    overlapping coverage each gateway forwards its own copy of a reading);
    otherwise every accepted reading is delivered once, by the end of the drain.
    """
    rows = []
    for n, gw in enumerate(gws):
        st = gw.status()
        accepted = int(st["spool"]["accepted_total"])
        delivered = int(st["forwarder"]["forwarded_total"]) if own_copies else accepted
        cpu = _cpu_s(gw.proc.pid) - cpu0[n]
        rows.append({
            "gateway": f"city-{n}", "sent": sent[n], "accepted": accepted,
            "accepted_per_s": round(accepted / sent_s, 1),
            "delivered_per_s": round(delivered / done_s, 1),
            "cpu_s_per_1000": round(1000 * cpu / accepted, 3) if accepted else None,
            "learned_heard": int((st.get("peers") or {}).get("heard", 0)),
        })
    return rows


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


READING_KEYS = ("id", "device", "kind", "fcnt", "readings", "alarms", "battery", "profile")


def _reading_backend(host: str, port: int, persistent: bool) -> Any:
    """A Backend that also compares each copy's reading (not its receivers) with the first."""
    from knute.tools.bench.reliability.harness import Backend
    from knute.tools.rig.subscriber import Message

    class ReadingBackend(Backend):
        def __init__(self) -> None:
            super().__init__(host, port, persistent=persistent)
            self.readings: dict[str, str] = {}
            self.other_readings: list[str] = []

        def _on_message(self, msg: Message, *, via: int = 0) -> None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = msg.doc()
                reading = json.dumps({k: doc.get(k) for k in READING_KEYS}, sort_keys=True)
                with self._lock:
                    first = self.readings.setdefault(str(doc["id"]), reading)
                    if first != reading:
                        self.other_readings.append(str(doc["id"]))
            super()._on_message(msg, via=via)

    return ReadingBackend()


@contextlib.contextmanager
def _city_mqtt(workdir: Path, cluster: Any,
               make_backend: Callable[[str, int, bool], Any]) -> Iterator[tuple[list[int], Any]]:
    """The city's MQTT side for one run: (the gateways' broker ports, a connected backend).

    Without ``cluster``, one Mosquitto of its own under ``workdir/broker``; with it, the
    cluster's MQTT ports and a balancer in front of them for the backend (a persistent
    session, so that a node's restart loses no reading). Everything is stopped on the way out.
    """
    from knute.tools.rig.broker import Broker

    broker: Any = None
    balancer: Any = None
    backend: Any = None
    try:
        if cluster is None:
            (workdir / "broker").mkdir(parents=True, exist_ok=True)
            broker = Broker(workdir / "broker", "mosquitto",
                            extra_config="max_queued_messages 0\n")
            broker.start()
            ports = [broker.port]
            backend = make_backend(broker.host, broker.port, False)
        else:
            from knute.tools.rig.rabbitmq import Balancer

            ports = list(cluster.mqtt_ports)
            balancer = Balancer(ports)
            backend = make_backend("127.0.0.1", balancer.port, True)
        backend.connect()
        yield ports, backend
    finally:
        if backend is not None:
            backend.disconnect()
        if broker is not None:
            broker.stop()
        if balancer is not None:
            from knute.tools.rig.subscriber import Subscriber

            with contextlib.suppress(Exception):    # a clean session drops the queue
                Subscriber("127.0.0.1", balancer.port, "city/none",
                           client_id=backend.client_id, clean_session=True).close()
            balancer.close()


def _simulate(ports: list[int], meters: int, air: int, start: float, speed: float,
              seconds: float) -> Any:
    """Start ``knute simulate`` on every gateway's UDP port, one forwarder each."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "knute.tools.cli", "simulate", "--meters", str(meters),
               "--air", str(air), "--seed", "100", "--first-device-id", "40000000",
               "--start", repr(start), "--speed", repr(speed), "--for", repr(seconds),
               "--forwarders", str(len(ports)), "--json"]
    for port in ports:
        command += ["--udp", f"127.0.0.1:{port}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(workdir: Path, gateways: int, rate: float, seconds: float,
            meters: int, cluster: Any = None, load: str = "fleet") -> dict[str, Any]:
    """One run; on ``cluster`` (a started RabbitCluster) if given, else on a Mosquitto.

    ``load``: "fleet" (an in-process fleet per gateway) or "simulate" (one
    ``knute simulate`` process for the whole city).
    """
    from knute.tools.bench.reliability.harness import Backend

    if load == "simulate":
        with _city_mqtt(workdir, cluster, _reading_backend) as (ports, backend):
            return _measure_simulate(workdir, gateways, rate, seconds, meters, ports, backend)
    with _city_mqtt(workdir, cluster,
                    lambda host, port, persistent: Backend(host, port, persistent=persistent)
                    ) as (ports, backend):
        return _measure_fleets(workdir, gateways, rate, seconds, meters, ports, backend)


def _measure_fleets(workdir: Path, gateways: int, rate: float, seconds: float,
                    meters: int, ports: list[int], backend: Any) -> dict[str, Any]:
    """``measure`` with an in-process fleet of its own for each gateway."""
    from knute.tools.bench.reliability.harness import FleetDriver, GatewayProc
    from knute.tools.rig.wait import wait_for

    fleets: list[Any] = []
    gws: list[Any] = []
    try:
        for n in range(gateways):
            fleet = FleetDriver(meters, meters // 10, seed=100 + n, rate=rate,
                                faults=(), fault_rate=0.0,
                                first_device_id=0x40000000 + n * 0x10000)
            order = ports[n % len(ports):] + ports[:n % len(ports)]
            gw = GatewayProc(workdir / f"gw-{n}", order[0], fleet.devices,
                             serial_url=fleet.serial_path, udp_port=fleet.udp_port,
                             gateway_id=f"city-{n}", mqtt_extra="learn_counters = true\n",
                             log_level="warning", fallback_ports=order[1:])
            fleets.append(fleet)
            gws.append(gw)
        for gw in gws:
            gw.start()
        cpu0 = [_cpu_s(gw.proc.pid) for gw in gws]
        start = time.monotonic()
        for fleet in fleets:
            fleet.start()
        time.sleep(seconds)
        for fleet in fleets:
            fleet.stop()
        sent_s = time.monotonic() - start

        def drained() -> bool:
            total = 0
            for gw in gws:
                st = gw.status()
                if st["spool"]["depth"] or st["ingest"]["commit_waiting"]:
                    return False
                total += int(st["spool"]["accepted_total"])
            return bool(backend.delivered() >= total)

        wait_for(drained, 120 + seconds, "every gateway's spool to drain")
        done_s = time.monotonic() - start
        backend.quiet(0.3)
        per_gw = _per_gateway(gws, cpu0, [f.sent for f in fleets], sent_s, done_s,
                              own_copies=False)
        accepted_total = sum(row["accepted"] for row in per_gw)
        return {"gateways": gateways, "rate_per_gateway": rate, "seconds": round(sent_s, 1),
                "drained_after_s": round(done_s, 1), "per_gateway": per_gw,
                "accepted": accepted_total, "delivered": backend.delivered(),
                "lost": max(0, accepted_total - backend.delivered()),
                "duplicates": backend.duplicates(),
                "mismatched_duplicates": len(backend.mismatched)}
    finally:
        for gw in gws:
            gw.close()
        for fleet in fleets:
            fleet.close()


def _measure_simulate(workdir: Path, gateways: int, rate: float, seconds: float,
                      meters: int, ports: list[int], backend: Any) -> dict[str, Any]:
    """``measure`` with one ``knute simulate`` process as the load of every gateway."""
    from knute.tools.bench.reliability.harness import GatewayProc
    from knute.tools.rig.broker import free_port
    from knute.tools.rig.wait import wait_for
    from knute.tools.sim.fleet import AIR_SEND_EVERY_S, WATER_SEND_EVERY_S, Fleet

    city_meters, city_air = meters * gateways, meters // 10 * gateways
    start = float(int(time.time()))
    # simulate builds the same fleet from the same seed and start: the gateways know it.
    fleet = Fleet(city_meters, city_air, start=start, seed=100, first_device_id=0x40000000)
    devices = [(n.device_id, n.kind, n.key) for n in fleet.nodes]
    speed = rate * gateways / (city_meters / WATER_SEND_EVERY_S + city_air / AIR_SEND_EVERY_S)
    udp_ports = [free_port() for _ in range(gateways)]
    gws: list[Any] = []
    sim: Any = None
    try:
        for n in range(gateways):
            order = ports[n % len(ports):] + ports[:n % len(ports)]
            gws.append(GatewayProc(workdir / f"gw-{n}", order[0], devices,
                                   udp_port=udp_ports[n], gateway_id=f"city-{n}",
                                   mqtt_extra="learn_counters = true\n", log_level="warning",
                                   fallback_ports=order[1:]))
        for gw in gws:
            gw.start()
        cpu0 = [_cpu_s(gw.proc.pid) for gw in gws]
        start_wall = time.monotonic()
        sim = _simulate(udp_ports, city_meters, city_air, start, speed, seconds)
        out, err = sim.communicate(timeout=seconds + 120)
        if sim.returncode != 0:
            raise KnuteError(f"knute simulate failed: {err.strip().splitlines()[-1:]}")
        summary = json.loads(out)
        sent_s = summary["simulated_s"] / speed
        valid = int(summary["valid"])

        def drained() -> bool:
            for gw in gws:
                st = gw.status()
                if st["spool"]["depth"] or st["ingest"]["commit_waiting"]:
                    return False
            return bool(backend.delivered() >= valid)

        wait_for(drained, 120 + seconds, "every gateway's spool to drain")
        done_s = time.monotonic() - start_wall
        backend.quiet(0.3)
        per_gw = _per_gateway(gws, cpu0, [g["packets"] for g in summary["udp_per_gateway"]],
                              sent_s, done_s, own_copies=True)
        accepted_total = sum(row["accepted"] for row in per_gw)
        delivered = backend.delivered()
        return {"gateways": gateways, "rate_per_gateway": rate, "seconds": round(sent_s, 1),
                "drained_after_s": round(done_s, 1), "per_gateway": per_gw,
                "load": "simulate", "simulate_sent": int(summary["sent"]), "valid": valid,
                "accepted": accepted_total, "delivered": delivered,
                "lost": max(0, valid - delivered),
                "duplicates": backend.duplicates(),
                "mismatched_duplicates": len(backend.other_readings)}
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
        for gw in gws:
            gw.close()


def run(args: argparse.Namespace) -> int:
    """Run the baseline (one gateway) and the city (``--gateways``); print the figures."""
    if args.gateways < 1 or args.rate <= 0 or args.seconds <= 0 or args.meters < 10:
        raise KnuteError("--gateways >= 1, --rate > 0, --seconds > 0 and --meters >= 10")
    with tempfile.TemporaryDirectory(prefix="knute-city-") as tmp:
        cluster: Any = None
        if getattr(args, "rabbitmq", False):
            from knute.tools.rig.rabbitmq import RabbitCluster

            cluster = RabbitCluster(Path(tmp) / "rabbitmq")
            cluster.start()
        try:
            load = getattr(args, "load", "fleet")
            base = measure(Path(tmp) / "baseline", 1, args.rate, args.seconds, args.meters,
                           cluster, load)
            city = measure(Path(tmp) / "city", args.gateways, args.rate, args.seconds,
                           args.meters, cluster, load)
        finally:
            if cluster is not None:
                cluster.stop()
    broker_kind = "rabbitmq-cluster-3" if cluster is not None else "mosquitto"
    base["broker"] = city["broker"] = broker_kind
    if args.json:
        print(json.dumps({"baseline": base, "city": city}, indent=1))
        return 0
    print(f"broker: {broker_kind}, load: {getattr(args, 'load', 'fleet')}")
    print(f"{'run':<10} {'gateway':<8} {'sent':>7} {'accepted':>9} {'acc/s':>7} "
          f"{'deliv/s':>8} {'cpu s/1k':>9} {'heard':>7}")
    for name, res in (("baseline", base), ("city", city)):
        for g in res["per_gateway"]:
            print(f"{name:<10} {g['gateway']:<8} {g['sent']:>7} {g['accepted']:>9} "
                  f"{g['accepted_per_s']:>7} {g['delivered_per_s']:>8} "
                  f"{g['cpu_s_per_1000']!s:>9} {g['learned_heard']:>7}")
        other = "another reading" if "valid" in res else "other bytes"
        if "valid" in res:
            print(f"{name:<10} simulate sent {res['valid']} valid frames "
                  f"({res['valid'] / res['seconds']:.0f}/s), {res['delivered']} delivered")
        print(f"{name:<10} lost {res['lost']}, duplicates {res['duplicates']} "
              f"({res['mismatched_duplicates']} with {other}), drained after "
              f"{res['drained_after_s']} s")
    return 0 if not base["lost"] and not city["lost"] else 1

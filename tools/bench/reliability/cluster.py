"""Cases of a clustered broker under fault: a RabbitMQ node killed, a partition between nodes.

Both run the same city: a three-node RabbitMQ cluster with its MQTT plugin
(tools/rig/rabbitmq.py: quorum queues for persistent sessions,
``pause_minority``), two real gateways (``knute gateway run``) each with its
own fleet and ``[mqtt] brokers`` = the three nodes (gateway A prefers node 1,
gateway B node 2), and the backend as a persistent subscriber
(``clean_session = false``) that reaches the cluster through a balancer.

``broker_node_kill``: under the steady stream, node 1 is killed (-9) and
started again; then both gateways are restarted (SIGTERM, start) while
their fleets keep sending.

``broker_partition``: node 1 is cut off from nodes 2 and 3 (every
distribution link through the rig's relays goes ``down``); it pauses
(``pause_minority``) and its clients move to the majority; after ``cut_s``
the links return and node 1 rejoins. Then both gateways are restarted.

In both, nothing accepted may be lost at the backend, and duplicates carry
the same id and bytes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from knute.gateway.errors import KnuteError
from knute.tools.bench.reliability.harness import Backend, FleetDriver, GatewayProc
from knute.tools.bench.reliability.results import WAIT_S, CaseResult, key_leaks
from knute.tools.rig.rabbitmq import Balancer, RabbitCluster, RabbitNode
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for

FAILBACK_CHECK_S = 2.0      # the gateways look back to their first broker this often


class CityOnCluster:
    """Two gateways with their fleets and one persistent backend on a RabbitMQ cluster."""

    def __init__(self, workdir: Path, cluster: RabbitCluster, *, rate: float,
                 seed: int) -> None:
        self.cluster = cluster
        ports = cluster.mqtt_ports
        self.balancer = Balancer(ports)
        self.backend = Backend("127.0.0.1", self.balancer.port, persistent=True)
        self.backend.connect()
        self.fleets: list[FleetDriver] = []
        self.gateways: list[GatewayProc] = []
        for n, name in enumerate(("a", "b")):
            fleet = FleetDriver(30, 10, seed=seed + n, rate=rate / 2,
                                first_device_id=0x21000000 + (n << 16))
            order = ports[n:] + ports[:n]         # A prefers node 1, B node 2
            gw = GatewayProc(workdir / f"gateway-{name}", order[0], fleet.devices,
                             serial_url=fleet.serial_path, udp_port=fleet.udp_port,
                             gateway_id=f"rel-{name}", fallback_ports=order[1:],
                             mqtt_extra=f"failback_check_s = {FAILBACK_CHECK_S}\n")
            self.fleets.append(fleet)
            self.gateways.append(gw)

    def start(self) -> None:
        """Start both gateways and both fleets; return once readings arrive."""
        for gw in self.gateways:
            gw.start()
        for fleet in self.fleets:
            fleet.start()
        self.wait_more(30, "first deliveries from the cluster")

    def wait_more(self, n: int, what: str) -> None:
        """Wait until ``n`` more distinct readings arrived at the backend; a WaitTimeout
        says where every party stood (``state``)."""
        before = self.backend.delivered()
        try:
            wait_for(lambda: self.backend.delivered() >= before + n, WAIT_S, what)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc} ({self.backend.delivered() - before} of {n}):\n"
                              f"{self.state()}") from None

    def state(self) -> str:
        """The gateways' forwarders and spools, the backend's connections and the nodes'
        log tails: what a stalled case needs to be told apart."""
        lines = []
        for gw in self.gateways:
            try:
                st = gw.status()
                lines.append(f"{gw.root.name}: forwarder {st['forwarder']}, "
                             f"spool depth {st['spool']['depth']}")
            except Exception as exc:        # a gateway that does not answer says so
                lines.append(f"{gw.root.name}: no status ({exc})")
        lines.append(f"backend: {self.backend.delivered()} delivered, "
                     f"{self.balancer.connections} connections through the balancer")
        for node in self.cluster.nodes:
            lines.append(f"node {node.index} (serves MQTT: {node.accepts_mqtt()}, "
                         f"pauses {node.pauses()}):\n{node.log_tail(12)}")
        return "\n".join(lines)

    def start_on_node_1(self) -> RabbitNode:
        """Start the city; return node 1 once gateway A is connected to it (the node both
        cases take away)."""
        node = self.cluster.node(1)
        self.start()
        wait_for(lambda: self.broker_of(self.gateways[0]) == node.mqtt_port, WAIT_S,
                 "gateway A on node 1")
        return node

    def back_on_node_1(self) -> None:
        """Wait until gateway A is back on node 1 and more readings arrived through it."""
        node = self.cluster.node(1)
        wait_for(lambda: self.broker_of(self.gateways[0]) == node.mqtt_port, WAIT_S,
                 "gateway A back on node 1")
        self.wait_more(30, "deliveries with node 1 back")

    def broker_of(self, gw: GatewayProc) -> int | None:
        """The MQTT port the gateway is connected to now, None when it is not connected."""
        fwd = gw.status()["forwarder"]
        if not fwd.get("connected"):
            return None
        return int(str(fwd.get("broker", ":0")).rsplit(":", 1)[1])

    def restart_gateways(self, result: CaseResult) -> None:
        """Stop (SIGTERM) and start each gateway in turn while the fleets keep sending."""
        for gw in self.gateways:
            code = gw.stop()
            if code != 0:
                result.problems.append(f"{gw.root.name} exit status {code} on SIGTERM")
            gw.start()
        self.wait_more(30, "deliveries after both gateways restarted")

    def drain(self, result: CaseResult, timeout: float = WAIT_S) -> None:
        """Stop the fleets, wait until both spools are empty and the backend has it all,
        stop the gateways and fill in the result."""
        for fleet in self.fleets:
            fleet.stop()

        def drained() -> bool:
            expect = 0
            for gw in self.gateways:
                st = gw.status()
                if st["ingest"]["dedup_waiting"] or st["ingest"]["commit_waiting"]:
                    return False
                if st["spool"]["depth"]:
                    return False
                expect += int(st["spool"]["accepted_total"]) - int(st["spool"]["evicted_total"])
            return self.backend.delivered() >= expect

        try:
            wait_for(drained, timeout, "both spools to drain to the backend")
        except KnuteError as exc:
            result.problems.append(str(exc))
        self.backend.quiet(0.5)
        for gw in self.gateways:
            code = gw.stop()
            if code != 0:
                result.problems.append(f"{gw.root.name} exit status {code} on SIGTERM")
        self.finish(result)

    def finish(self, result: CaseResult) -> None:
        """The row's figures from both spools, the backend and the gateways' logs."""
        accepted = evicted = 0
        valid: set[str] = set()
        for gw, fleet in zip(self.gateways, self.fleets, strict=True):
            meta = gw.spool_meta()
            accepted += meta["accepted_total"]
            evicted += meta["evicted_total"]
            result.sent += fleet.sent
            result.crashes += gw.crashes
            valid |= fleet.valid_ids
            log = gw.log_text()
            result.check_log(log, f"{gw.root.name}'s log")
            result.problems += key_leaks({f"{gw.root.name} log": log}, fleet.keys)
        result.count_delivery(accepted, evicted, self.backend.delivered(),
                              self.backend.duplicates())
        result.problems += self.backend.problems(valid)
        result.notes["sent_valid"] = sum(f.sent_valid for f in self.fleets)
        result.notes["backend_connections"] = self.balancer.connections

    def close(self) -> None:
        """Stop the gateways and fleets, end the backend's session on the broker."""
        for fleet in self.fleets:
            fleet.close()
        for gw in self.gateways:
            gw.close()
        self.backend.disconnect()
        with contextlib.suppress(Exception):      # a clean session drops the queue
            Subscriber("127.0.0.1", self.balancer.port, "rel/none",
                       client_id=self.backend.client_id,
                       clean_session=True).close()
        self.balancer.close()


@contextlib.contextmanager
def city_on_cluster(workdir: Path, cluster: RabbitCluster | None, *, rate: float,
                    seed: int) -> Iterator[CityOnCluster]:
    """A city on ``cluster`` (or on a cluster of its own, started and stopped here).

    A cluster passed in is left whole afterwards: links healed, every node running.
    """
    own = cluster is None
    if cluster is None:
        cluster = RabbitCluster(workdir / "rabbitmq")
        cluster.start()
    city: CityOnCluster | None = None
    try:
        city = CityOnCluster(workdir, cluster, rate=rate, seed=seed)
        yield city
    finally:
        if city is not None:
            city.close()
        if own:
            cluster.stop()
        else:
            cluster.heal()
            for node in cluster.nodes:
                if not node.running:
                    node.start()
            for node in cluster.nodes:
                node.wait_ready()


def case_broker_node_kill(workdir: Path, *, cluster: RabbitCluster | None = None,
                          rate: float = 100.0, seed: int = 21,
                          down_s: float = 2.0) -> CaseResult:
    """kill -9 of the broker node gateway A is on, its restart, then both gateways restarted."""
    result = CaseResult("broker_node_kill", runs=1)
    with city_on_cluster(workdir, cluster, rate=rate, seed=seed) as city:
        ring = city.cluster
        gw_a = city.gateways[0]
        victim = city.start_on_node_1()
        t0 = time.monotonic()
        ring.kill(1)
        wait_for(lambda: city.broker_of(gw_a) not in (None, victim.mqtt_port), WAIT_S,
                 "gateway A on another node")
        result.notes["failover_s"] = round(time.monotonic() - t0, 2)
        city.wait_more(30, "deliveries with node 1 dead")
        time.sleep(down_s)               # the outage itself: the stream runs meanwhile
        t0 = time.monotonic()
        ring.restart(1)
        result.notes["node_restart_s"] = round(time.monotonic() - t0, 2)
        city.back_on_node_1()
        result.notes["failbacks_a"] = int(gw_a.status()["forwarder"].get("failbacks", 0))
        city.restart_gateways(result)
        city.drain(result)
    return result


def case_broker_partition(workdir: Path, *, cluster: RabbitCluster | None = None,
                          rate: float = 100.0, seed: int = 22,
                          cut_s: float = 2.0) -> CaseResult:
    """Node 1 cut off from the others (it pauses), the links back, both gateways restarted."""
    result = CaseResult("broker_partition", runs=1)
    with city_on_cluster(workdir, cluster, rate=rate, seed=seed) as city:
        ring = city.cluster
        gw_a = city.gateways[0]
        minority = city.start_on_node_1()
        pauses = [n.pauses() for n in ring.nodes]
        t0 = time.monotonic()
        ring.partition(1)
        wait_for(lambda: not minority.accepts_mqtt(), WAIT_S, "node 1 to pause")
        result.notes["pause_s"] = round(time.monotonic() - t0, 2)
        wait_for(lambda: city.broker_of(gw_a) not in (None, minority.mqtt_port), WAIT_S,
                 "gateway A on the majority")
        result.notes["failover_s"] = round(time.monotonic() - t0, 2)
        city.wait_more(30, "deliveries from the majority")
        time.sleep(cut_s)                # the partition itself: the stream runs meanwhile
        t0 = time.monotonic()
        ring.heal()
        wait_for(minority.accepts_mqtt, WAIT_S, "node 1 to resume after the partition")
        result.notes["resume_s"] = round(time.monotonic() - t0, 2)
        paused = [n.index for n, before in zip(ring.nodes, pauses, strict=True)
                  if n.pauses() > before]
        result.notes["paused_nodes"] = paused
        if paused != [1]:
            result.problems.append(f"nodes {paused} paused; pause_minority should pause "
                                   "node 1 alone, the minority")
        city.back_on_node_1()
        city.restart_gateways(result)
        city.drain(result)
    return result

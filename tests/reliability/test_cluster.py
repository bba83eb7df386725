"""A three-node RabbitMQ cluster under fault with two gateways streaming into it: a node
killed and restarted, a partition between nodes, both gateways restarted.

One cluster serves the module (starting three Erlang nodes and joining them
takes about a minute on a loaded machine); each case leaves it whole again.
The cases stream at ``RATE`` frames/s, half their ``--quick`` rate: the stream
still runs through every kill, cut and restart, and what it costs (gateways,
fleets, backend, the quorum queue's replication on three nodes) halves
(docs/reliability.md).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from knute.tools.bench import reliability as rel
from knute.tools.rig.rabbitmq import RabbitCluster, installed
from tests.reliability.conftest import check

RATE = 50.0


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if not installed():
        pytest.fail("RabbitMQ not installed (apt-get install rabbitmq-server; make test does it)")
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _port_please(epmd_port: int, name: str) -> int | None:
    """Ask an epmd where ``name`` listens (PORT_PLEASE2_REQ); None if it is not registered."""
    with socket.create_connection(("127.0.0.1", epmd_port), timeout=10) as sock:
        request = b"\x7a" + name.encode()
        sock.sendall(struct.pack(">H", len(request)) + request)
        reply = b""
        while chunk := sock.recv(1024):
            reply += chunk
    assert reply[0] == 119, reply
    return None if reply[1] else int(struct.unpack(">H", reply[2:4])[0])


def test_nodes_reach_each_other_only_through_the_relays(rabbit_cluster: RabbitCluster) -> None:
    one, two = rabbit_cluster.node(1), rabbit_cluster.node(2)
    assert one.epmd is not None and two.epmd is not None
    # Node 1's epmd: itself at its real port, node 2 at the relay that leads there.
    assert _port_please(one.epmd.port, one.short) == one.dist_port
    relay = rabbit_cluster.links[(1, 2)]
    assert _port_please(one.epmd.port, two.short) == relay.port != two.dist_port
    assert relay.target == ("127.0.0.1", two.dist_port)
    assert _port_please(one.epmd.port, "nobody") is None
    assert rabbit_cluster.running_nodes() == {n.name for n in rabbit_cluster.nodes}


def test_a_killed_node_loses_nothing(rabbit_cluster: RabbitCluster, tmp_path: Path) -> None:
    result = rel.case_broker_node_kill(tmp_path, cluster=rabbit_cluster, down_s=1.0,
                                      rate=RATE)
    check(result)
    assert result.delivered > 300 and result.notes["failbacks_a"] >= 1
    assert rabbit_cluster.node(1).starts == 2


def test_a_partition_loses_nothing(rabbit_cluster: RabbitCluster, tmp_path: Path) -> None:
    result = rel.case_broker_partition(tmp_path, cluster=rabbit_cluster, cut_s=1.0,
                                      rate=RATE)
    check(result)
    assert result.delivered > 300
    # The cut node paused (pause_minority), and it alone: the majority kept serving.
    assert result.notes["paused_nodes"] == [1]
    assert result.notes["pause_s"] < 60 and result.notes["resume_s"] > 0


def test_bench_city_on_the_cluster(rabbit_cluster: RabbitCluster, tmp_path: Path) -> None:
    # `knute bench city --rabbitmq`: two gateways, each preferring its own node.
    from knute.tools.bench import city

    run = city.measure(tmp_path, 2, 60.0, 3.0, 20, rabbit_cluster)
    assert [g["gateway"] for g in run["per_gateway"]] == ["city-0", "city-1"]
    assert all(g["accepted"] > 0 and g["accepted_per_s"] > 0 for g in run["per_gateway"])
    assert all(g["learned_heard"] > 0 for g in run["per_gateway"])
    assert run["lost"] == 0 and run["mismatched_duplicates"] == 0
    assert run["delivered"] >= run["accepted"] > 0

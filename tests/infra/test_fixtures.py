"""The shared fixtures of tests/conftest.py do what their docstrings promise."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from knute.tools.rig.subscriber import Subscriber
from tests.conftest import (
    MOSQUITTO,
    Broker,
    BrokerError,
    BrokerFactory,
    default_broker_kind,
    describe_threads,
    free_port,
    leaked_threads,
)

WAIT_S = 15.0  # upper bound on any wait below; never a speed requirement


def read_exactly(fd: int, count: int) -> bytes:
    """``count`` bytes from ``fd``, waiting at most WAIT_S for each chunk."""
    data = b""
    while len(data) < count:
        ready, _, _ = select.select([fd], [], [], WAIT_S)
        assert ready, f"no data on fd {fd} after {len(data)} of {count} bytes"
        data += os.read(fd, count - len(data))
    return data


def publish_qos1(broker: Broker, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}")
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published(), "no PUBACK from the broker"
    finally:
        client.disconnect()
        client.loop_stop()


def broker_kinds() -> list[str]:
    """Both broker kinds; mosquitto only where it is installed."""
    kinds = ["amqtt"]
    if os.access(MOSQUITTO, os.X_OK):
        kinds.insert(0, "mosquitto")
    return kinds


@pytest.mark.parametrize("kind", broker_kinds())
def test_broker_delivers_qos1(mqtt_broker_factory: BrokerFactory, kind: str) -> None:
    broker = mqtt_broker_factory(kind)
    assert broker.kind == kind and broker.running
    sub = Subscriber(broker.host, broker.port, "knute-test/qos1", keepalive=10)
    try:
        assert sub.subscribed.is_set(), "SUBACK never came"
        publish_qos1(broker, "knute-test/qos1", b"\x01reading")
        (message,) = sub.wait_count(1, timeout=WAIT_S)
        assert (message.topic, message.payload, message.qos, message.retain) == (
            "knute-test/qos1", b"\x01reading", 1, False)
    finally:
        sub.close()


def test_mosquitto_fixture_is_the_default_broker(mosquitto: Broker) -> None:
    assert mosquitto.kind == default_broker_kind()
    assert mosquitto.host == "127.0.0.1"
    if os.access(MOSQUITTO, os.X_OK) and not os.environ.get("KNUTE_TEST_BROKER"):
        assert mosquitto.kind == "mosquitto"
        config = (mosquitto.workdir / "mosquitto.conf").read_text()
        assert f"listener {mosquitto.port} 127.0.0.1" in config
        assert "allow_anonymous true" in config and "persistence false" in config


@pytest.mark.parametrize("kind", broker_kinds())
def test_broker_outage_and_return(mqtt_broker_factory: BrokerFactory, kind: str) -> None:
    broker = mqtt_broker_factory(kind)
    sub = Subscriber(broker.host, broker.port, "knute-test/outage", keepalive=10)
    try:
        assert sub.subscribed.is_set()
        port, pid = broker.port, broker.pid

        broker.stop()
        assert not broker.running
        assert sub.disconnected.wait(WAIT_S), "the client never saw the outage"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((broker.host, broker.port), timeout=WAIT_S).close()

        sub.subscribed.clear()
        broker.start()
        assert broker.running and broker.port == port and broker.pid != pid
        assert sub.subscribed.wait(WAIT_S), "the client did not reconnect and resubscribe"
        assert sub.connects == 2
        publish_qos1(broker, "knute-test/outage", b"after")
        assert sub.wait_count(1, timeout=WAIT_S)[-1].payload == b"after"

        broker.restart()
        assert broker.running and broker.starts == 3
    finally:
        sub.close()


def test_broker_start_failure_is_reported(tmp_path: Path) -> None:
    # A port that is already taken: the broker cannot listen and start() says why.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        broker = Broker(tmp_path, default_broker_kind(), port=holder.getsockname()[1])
        with pytest.raises(BrokerError, match=broker.kind):
            broker.start(timeout_s=5)
        assert not broker.running


def test_free_port_is_free_for_tcp_and_udp() -> None:
    port = free_port()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))
    low, high = (int(x) for x in
                 Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert not low <= port <= high, "a free port must lie outside the ephemeral range"


def test_pty_pair_passes_bytes_both_ways(pty_pair: tuple[int, str]) -> None:
    master_fd, slave_path = pty_pair
    every_byte = bytes(range(256))
    slave_fd = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(master_fd, every_byte)
        assert read_exactly(slave_fd, 256) == every_byte  # raw: \n, \r, ^C, ^D unchanged
        reply = b"\r\n\x00from-node\x03"
        os.write(slave_fd, reply)
        assert read_exactly(master_fd, len(reply)) == reply
    finally:
        os.close(slave_fd)
    # The fixture keeps the slave open: the master still works after the close.
    os.write(master_fd, b"x")


def test_micropython_bin_runs(micropython_bin: Path) -> None:
    out = subprocess.run(
        [str(micropython_bin), "-X", "heapsize=64k", "-c",
         "import sys; print(sys.implementation.name, 6 * 7)"],
        capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert out.stdout.split() == ["micropython", "42"]


def test_knute_bin_runs(knute_bin: Path) -> None:
    out = subprocess.run([str(knute_bin), "--help"], capture_output=True, text=True,
                         timeout=WAIT_S, check=True)
    assert "usage: knute" in out.stdout


def test_thread_leak_check_names_the_thread() -> None:
    before = set(threading.enumerate())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="leaky-reader")
    thread.start()
    try:
        leaked = leaked_threads(before, grace_s=0.2)
        assert leaked == [thread]
        assert describe_threads(leaked) == "leaky-reader (Event.wait)"
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert leaked_threads(before, grace_s=0.2) == []


def test_thread_leak_check_ignores_daemons_and_waits_for_finishers() -> None:
    before = set(threading.enumerate())
    stop = threading.Event()
    daemon = threading.Thread(target=stop.wait, name="daemon", daemon=True)
    daemon.start()
    finisher = threading.Timer(0.1, lambda: None)  # ends within the grace period
    finisher.start()
    try:
        assert leaked_threads(before, grace_s=WAIT_S) == []
    finally:
        stop.set()
        daemon.join(WAIT_S)


def test_thread_leak_fails_the_test_that_leaked(tmp_path: Path) -> None:
    # A real pytest run with this conftest as a plugin, on a test that leaks a thread.
    (tmp_path / "test_leaky.py").write_text(
        "import threading\n"
        "STOP = threading.Event()\n"
        "def test_leaks():\n"
        "    threading.Thread(target=STOP.wait, args=(4,), name='forgotten-poller').start()\n"
        "def test_clean():\n"
        "    t = threading.Thread(target=STOP.wait, args=(0.01,))\n"
        "    t.start()\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-q", str(tmp_path / "test_leaky.py")],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR at teardown of test_leaks" in run.stdout
    assert "forgotten-poller (Event.wait)" in run.stdout

"""Broker failover: ``[mqtt] brokers`` with two real Mosquittos.

What these tests hold the forwarder to:
- when the broker it uses goes down it moves to the next one and delivers there;
- with ``failback = "primary"`` it returns to the first broker once that is back;
- with every broker down the spool holds everything and the status says so
  (``all_brokers_down``), and delivery resumes when one broker returns;
- across all of it nothing spooled is lost, and a reading seen twice has the
  same id and the same bytes (check_delivery).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.gateway.config import parse
from knute.gateway.errors import KnuteError
from knute.gateway.forwarder import Forwarder, broker_answers
from knute.gateway.spool import Spool
from knute.tools.rig.faults import FaultyLink
from knute.tools.rig.subscriber import Message, Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_forwarder import check_delivery, fast_cfg, make_rows

WAIT_S = 60.0


class Both:
    """One collector over two brokers: the messages of both, in arrival order."""

    def __init__(self, brokers: list[Broker]) -> None:
        self._lock = threading.Lock()
        self._got: list[Message] = []
        self.subs = [Subscriber(b.host, b.port, "knute/+/+/up", client_id=f"failover-sub-{i}",
                                clean_session=False, on_message=self._on_message)
                     for i, b in enumerate(brokers)]

    def _on_message(self, msg: Message) -> None:
        with self._lock:
            self._got.append(msg)

    def messages(self, suffix: str = "") -> list[Message]:
        """Every message of both subscribers whose topic ends with ``suffix``."""
        with self._lock:
            return [m for m in self._got if m.topic.endswith(suffix)]

    def ids(self) -> set[str]:
        """Distinct reading ids received on either broker."""
        return {str(m.doc()["id"]) for m in self.messages()}

    def close(self) -> None:
        """Disconnect both."""
        for sub in self.subs:
            sub.close()


@pytest.fixture
def two_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Broker]]:
    """Two persistent Mosquittos (a subscriber's queue survives their restarts)."""
    brokers = [Broker(tmp_path_factory.mktemp(f"mosquitto-{n}"), "mosquitto", persistent=True,
                      extra_config="max_queued_messages 0\n") for n in "ab"]
    try:
        for b in brokers:
            b.start()
        yield brokers
    finally:
        for b in brokers:
            b.stop()


def _feed(spool: Spool, fwd: Forwarder, rows: list[Any]) -> None:
    for start in range(0, len(rows), 50):
        spool.accept(rows[start:start + 50])
        fwd.wake()


def test_brokers_list_is_checked() -> None:
    base = {"gateway": {"id": "g"}, "serial": [{"name": "s", "url": "/dev/null"}]}
    cfg = parse({**base, "mqtt": {"brokers": ["a.example:1883", "[::1]:8883"]}})
    assert cfg.mqtt.broker_list == (("a.example", 1883), ("::1", 8883))
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("a.example", 1883)
    assert parse({**base, "mqtt": {"port": 1884}}).mqtt.broker_list == (("localhost", 1884),)
    for bad, words in (({"brokers": ["a:1883"], "host": "b"}, "mqtt.brokers: give host"),
                       ({"brokers": []}, "mqtt.brokers: must name"),
                       ({"brokers": ["a"]}, "mqtt.brokers[0]: must be"),
                       ({"brokers": ["a:1", "b:0"]}, "mqtt.brokers[1]: must be"),
                       ({"brokers": ["a:1", "a:1"]}, "mqtt.brokers[1]: 'a:1' is listed twice"),
                       ({"failback": "never"}, "mqtt.failback: must be one of")):
        with pytest.raises(KnuteError, match=words.replace("[", r"\[").replace("]", r"\]")):
            parse({**base, "mqtt": bad})


def test_failover_failback_and_every_broker_down(two_brokers: list[Broker],
                                                 tmp_path: Path) -> None:
    a, b = two_brokers
    both = Both([a, b])
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    cfg = fast_cfg(a.port, brokers=((a.host, a.port), (b.host, b.port)), failback="primary",
                   failback_check_s=1.0)
    fwd = Forwarder(spool, cfg, gateway_id="gw-failover", status_provider=dict)
    rows = make_rows(devices=4, per_device=100)
    parts = [rows[n * 80:(n + 1) * 80] for n in range(5)]
    fwd.start()
    try:
        _feed(spool, fwd, parts[0])
        wait_for(lambda: spool.stats()["depth"] == 0, WAIT_S, "delivery to broker a")
        assert fwd.broker == f"{a.host}:{a.port}"

        a.stop()                                   # a goes down: the forwarder moves to b
        _feed(spool, fwd, parts[1])
        wait_for(lambda: spool.stats()["depth"] == 0, WAIT_S, "delivery to broker b")
        assert fwd.broker == f"{b.host}:{b.port}"
        assert fwd.stats()["failovers"] >= 1
        assert fwd.stats()["all_brokers_down"] == 0

        a.start()                                  # a is back: failback within a few checks
        wait_for(lambda: fwd.broker == f"{a.host}:{a.port}" and fwd.state == "open", WAIT_S,
                 "failback to broker a")
        assert fwd.stats()["failbacks"] == 1
        _feed(spool, fwd, parts[2])
        wait_for(lambda: spool.stats()["depth"] == 0, WAIT_S, "delivery after failback")

        a.stop()                                   # every broker down: the spool holds
        b.stop()
        wait_for(lambda: fwd.stats()["all_brokers_down"] == 1, WAIT_S, "all brokers down")
        _feed(spool, fwd, parts[3])
        assert spool.stats()["depth"] == len(parts[3])
        doc = fwd.status_document(False)
        assert doc["forwarder"]["all_brokers_down"] == 1
        assert doc["spool"]["depth"] == len(parts[3])
        errors = [s["last_error"] for s in fwd.brokers_status()]
        assert all(errors), errors

        b.start()                                  # one broker back is enough
        wait_for(lambda: spool.stats()["depth"] == 0, WAIT_S, "delivery to b after the outage")
        assert fwd.stats()["all_brokers_down"] == 0
        a.start()
        _feed(spool, fwd, parts[4])
        wait_for(lambda: spool.stats()["depth"] == 0, WAIT_S, "the last rows")
        wait_for(lambda: both.ids() >= {f"{r.device_id:08x}:{r.fcnt}" for r in rows}, WAIT_S,
                 "every reading at a subscriber")
        check_delivery(both, rows)  # type: ignore[arg-type]
    finally:
        fwd.stop(drain_timeout_s=2)
        both.close()
        spool.close()


def test_the_failback_probe_wants_a_connack_not_an_open_port(two_brokers: list[Broker]) -> None:
    a, _ = two_brokers
    cfg = fast_cfg(a.port)
    assert broker_answers(cfg, a.host, a.port, "probe-test")
    link = FaultyLink((a.host, a.port))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        assert broker_answers(cfg, "127.0.0.1", link.port, "probe-test")   # relayed: yes
        link.set_mode("down")                    # the port accepts, the broker is gone
        assert not broker_answers(cfg, "127.0.0.1", link.port, "probe-test")
        port = silent.getsockname()[1]           # accepts, never answers
        assert not broker_answers(cfg, "127.0.0.1", port, "probe-test", timeout_s=0.5)
        a.stop()
        assert not broker_answers(cfg, a.host, a.port, "probe-test")
    finally:
        silent.close()
        link.close()

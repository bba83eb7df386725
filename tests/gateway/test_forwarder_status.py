"""The retained gateway status across a real Mosquitto restart.

Mosquitto publishes the will of every connected client when it shuts down
and, with persistence, keeps it retained across the restart: a healthy
gateway reads "offline" until it reconnects. The forwarder's first PUBLISH on
every connection is the retained "online", ahead of any spooled reading.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Spool
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_forwarder import (
    STATUS,
    Collector,
    fast_cfg,
    make_rows,
    tuned_broker_at,
)


@pytest.fixture
def persistent_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with persistence, as docs/mqtt.md advises for the status topic."""
    broker = tuned_broker_at(tmp_path_factory.mktemp("restart-mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_online_is_the_first_message_after_a_broker_restart(
        persistent_broker: Broker, tmp_path: Path, protocol: str) -> None:
    broker = persistent_broker
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    fwd = Forwarder(spool, fast_cfg(broker.port, protocol=protocol, status_interval_s=3600),
                    gateway_id="gw-restart", status_provider=dict)
    # A persistent QoS 1 session: the broker keeps what is published while the
    # watcher itself reconnects, so it sees the gateway's messages in order.
    watcher = Collector(broker.host, broker.port, client_id="restart-watch", persistent=True)
    fwd.start()
    try:
        wait_for(lambda: fwd.state == "open")
        wait_for(lambda: any(s["status"] == "online" for s, _r in watcher.statuses()))
        broker.stop()                              # Mosquitto publishes the will now
        wait_for(lambda: fwd.state != "open")
        rows = make_rows(devices=3, per_device=100)
        spool.accept(rows)                         # a backlog waits for the broker
        fwd.wake()
        before = len(watcher.messages)
        broker.start()
        wait_for(lambda: spool.stats()["depth"] == 0)
        wait_for(lambda: len(watcher.ids()) == len(rows))
        with watcher.lock:
            after = watcher.messages[before:]
        # The first thing the gateway published on its new connection is "online",
        # before any of the backlog.
        first_reading = next(i for i, (t, _p, _r) in enumerate(after) if t.endswith("/up"))
        statuses = [(i, t, p) for i, (t, p, _r) in enumerate(after) if t.endswith("/status")]
        onlines = [i for i, _t, p in statuses if b'"status":"online"' in p]
        assert onlines and onlines[0] < first_reading, after[:3]
        # A subscriber arriving now reads the gateway as online.
        late = Collector(broker.host, broker.port, "knute/gateway/+/status")
        try:
            wait_for(lambda: bool(late.statuses()))
            doc, retained = late.statuses()[0]
        finally:
            late.close()
        assert retained and doc["status"] == "online" and doc["gateway"] == "gw-restart"
        STATUS.validate(doc)
        assert fwd.stats()["connections"] == 2
    finally:
        fwd.stop(drain_timeout_s=2)
        watcher.close()
        spool.close()


def test_back_online_soon_after_a_long_broker_restart(persistent_broker: Broker,
                                                      tmp_path: Path) -> None:
    """After 12 s down the backoff alone would wait 8-16 s more; a broker whose host
    refuses the connection is retried at least every BROKER_DOWN_RETRY_MAX_S (2 s)."""
    broker = persistent_broker
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    cfg = fast_cfg(broker.port, backoff_min_s=0.5, backoff_max_s=60.0,
                   status_interval_s=3600)
    fwd = Forwarder(spool, cfg, gateway_id="gw-restart", status_provider=dict)
    watcher = Collector(broker.host, broker.port, "knute/gateway/+/status",
                        client_id="restart-watch-long", persistent=True)
    fwd.start()
    try:
        wait_for(lambda: fwd.state == "open")
        broker.stop()
        wait_for(lambda: fwd.state != "open")
        deadline = time.monotonic() + 12.0
        while time.monotonic() < deadline:     # a long restart: the gateway keeps trying
            time.sleep(0.2)
        attempts_before = fwd.stats()["reconnects"]
        broker.start()
        # Generous against load; the backoff alone would take 8-16 s here.
        wait_for(lambda: fwd.state == "open", 7.0,
                 what="the reconnection within 7 s of the broker's return")
        assert attempts_before >= 6                   # retried every 2 s at most meanwhile
        wait_for(lambda: watcher.statuses()[-1][0]["status"] == "online")
    finally:
        fwd.stop(drain_timeout_s=2)
        watcher.close()
        spool.close()

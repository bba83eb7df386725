"""The retained gateway status across a real Mosquitto restart.

Mosquitto publishes the will of every connected client when it shuts down
and, with persistence, keeps it retained across the restart: a healthy
gateway reads "offline" until it reconnects. The forwarder's first PUBLISH on
every connection is the retained "online", ahead of any spooled reading.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Spool
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_forwarder import (
    STATUS,
    fast_cfg,
    make_rows,
    statuses,
)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_online_is_the_first_message_after_a_broker_restart(
        tuned_broker: Broker, tmp_path: Path, protocol: str) -> None:
    broker = tuned_broker
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    fwd = Forwarder(spool, fast_cfg(broker.port, protocol=protocol, status_interval_s=3600),
                    gateway_id="gw-restart", status_provider=dict)
    # A persistent QoS 1 session: the broker keeps what is published while the
    # watcher itself reconnects, so it sees the gateway's messages in order.
    watcher = Subscriber(broker.host, broker.port, "knute/#", client_id="restart-watch",
                         clean_session=False)
    fwd.start()
    try:
        wait_for(lambda: fwd.state == "open")
        wait_for(lambda: any(s["status"] == "online" for s, _r in statuses(watcher)))
        broker.stop()                              # Mosquitto publishes the will now
        wait_for(lambda: fwd.state != "open")
        rows = make_rows(devices=3, per_device=100)
        spool.accept(rows)                         # a backlog waits for the broker
        fwd.wake()
        before = len(watcher.messages())
        broker.start()
        wait_for(lambda: spool.stats()["depth"] == 0)
        wait_for(lambda: len(watcher.ids()) == len(rows))
        after = watcher.messages()[before:]
        # The first thing the gateway published on its new connection is "online",
        # before any of the backlog.
        first_reading = next(i for i, m in enumerate(after) if m.topic.endswith("/up"))
        onlines = [i for i, m in enumerate(after)
                   if m.topic.endswith("/status") and b'"status":"online"' in m.payload]
        assert onlines and onlines[0] < first_reading, after[:3]
        # A subscriber arriving now reads the gateway as online.
        late = Subscriber(broker.host, broker.port, "knute/gateway/+/status")
        try:
            wait_for(lambda: bool(statuses(late)))
            doc, retained = statuses(late)[0]
        finally:
            late.close()
        assert retained and doc["status"] == "online" and doc["gateway"] == "gw-restart"
        STATUS.validate(doc)
        assert fwd.stats()["connections"] == 2
    finally:
        fwd.stop(drain_timeout_s=2)
        watcher.close()
        spool.close()


def test_back_online_soon_after_a_long_broker_restart(tuned_broker: Broker,
                                                      tmp_path: Path) -> None:
    """After six failed attempts (6-10 s down) the backoff alone would wait 16-32 s more;
    a broker whose host refuses the connection is retried at least every
    BROKER_DOWN_RETRY_MAX_S (2 s), so the gateway is back within seconds."""
    broker = tuned_broker
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    cfg = fast_cfg(broker.port, backoff_min_s=0.5, backoff_max_s=60.0,
                   status_interval_s=3600)
    fwd = Forwarder(spool, cfg, gateway_id="gw-restart", status_provider=dict)
    watcher = Subscriber(broker.host, broker.port, "knute/gateway/+/status",
                         client_id="restart-watch-long", clean_session=False)
    fwd.start()
    try:
        wait_for(lambda: fwd.state == "open")
        broker.stop()
        wait_for(lambda: fwd.state != "open")
        # A long restart: down until the gateway has tried six times (the uncapped
        # backoff would have taken nearly 16 s for those).
        wait_for(lambda: fwd.stats()["reconnects"] >= 6, 60, "six attempts meanwhile")
        broker.start()
        # Generous against load; the backoff alone would take 16-32 s here.
        wait_for(lambda: fwd.state == "open", 7.0,
                 what="the reconnection within 7 s of the broker's return")
        wait_for(lambda: statuses(watcher)[-1][0]["status"] == "online")
    finally:
        fwd.stop(drain_timeout_s=2)
        watcher.close()
        spool.close()

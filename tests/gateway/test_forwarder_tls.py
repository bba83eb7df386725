"""The forwarder over TLS with a test CA, a client certificate and a password file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from knute.gateway.config import TlsSettings
from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Spool
from knute.tools.rig.tls import TlsBroker
from knute.tools.rig.wait import wait_for
from tests.gateway.test_forwarder import Collector, check_delivery, fast_cfg, make_rows


@pytest.fixture
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A started Mosquitto with a TLS listener (see TlsBroker)."""
    broker = TlsBroker(tmp_path_factory.mktemp("tls-mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tls_with_client_certificate_and_password(tls_broker: TlsBroker, tmp_path: Path,
                                                  protocol: str) -> None:
    pki = tls_broker.pki
    collector = Collector(tls_broker.host, tls_broker.port)
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    rows = make_rows(devices=3, per_device=30)
    spool.accept(rows)
    cfg = fast_cfg(tls_broker.tls_port, protocol=protocol,
                   tls=TlsSettings(str(pki["ca.pem"]), str(pki["client.pem"]),
                                   str(pki["client.key"])),
                   username="gateway", password="s3cret")
    assert cfg.use_tls
    fwd = Forwarder(spool, cfg, gateway_id="gw-tls", status_provider=dict)
    fwd.start()
    try:
        wait_for(lambda: spool.stats()["depth"] == 0)
        wait_for(lambda: len(collector.ids()) == len(rows))
        check_delivery(collector, rows)
    finally:
        fwd.stop(drain_timeout_s=2)
        collector.close()
        spool.close()


def test_tls_refusals_are_reported_and_nothing_leaves_the_spool(tls_broker: TlsBroker,
                                                                tmp_path: Path) -> None:
    pki = tls_broker.pki
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    spool.accept(make_rows(devices=1, per_device=3))
    cases = [
        # wrong password: the broker answers CONNACK "not authorized"
        (fast_cfg(tls_broker.tls_port, tls=TlsSettings(str(pki["ca.pem"]), str(pki["client.pem"]),
                                                       str(pki["client.key"])),
                  username="gateway", password="wrong"), "refused"),
        # no client certificate: the TLS handshake fails
        (fast_cfg(tls_broker.tls_port, tls=TlsSettings(str(pki["ca.pem"])), username="gateway",
                  password="s3cret"), "before CONNACK"),
        # a server certificate not signed by the CA we trust
        (fast_cfg(tls_broker.tls_port, tls=TlsSettings(str(pki["client.pem"]),
                                                       str(pki["client.pem"]),
                                                       str(pki["client.key"])),
                  username="gateway", password="s3cret"), "certificate verify failed"),
    ]
    for cfg, words in cases:
        fwd = Forwarder(spool, cfg, gateway_id="gw-tls", status_provider=dict)
        fwd.start()
        try:
            wait_for(lambda f=fwd: f.stats()["reconnects"] >= 2, 20)  # type: ignore[misc]
            assert words in fwd.last_error, fwd.last_error
            assert fwd.stats()["connections"] == 0
            assert fwd.state != "open"
        finally:
            fwd.stop(drain_timeout_s=0.2)
    assert spool.stats()["depth"] == 3
    spool.close()

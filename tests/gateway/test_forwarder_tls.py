"""The forwarder over TLS with a test CA, a client certificate and a password file."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import TlsSettings
from gateway.forwarder import Forwarder
from gateway.spool import Spool
from tests.conftest import Broker, free_port
from tests.gateway.test_forwarder import Collector, check_delivery, fast_cfg, make_rows, wait_until

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, common: str,
           key: ec.EllipticCurvePrivateKey, *, server: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        import ipaddress

        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("knute test CA")
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    paths = {name: folder / name for name in
             ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}
    paths["ca.pem"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_key, ca_name, f"knute test {role}", key, server=role == "server")
        paths[f"{role}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, paths[f"{role}.key"])
    return paths


class TlsBroker(Broker):
    """Mosquitto with a plain listener (for the probe and the test subscriber) and a TLS
    listener that wants a client certificate and a username/password."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "mosquitto")
        self.tls_port = free_port()
        self.pki = make_pki(workdir)
        self.passwd = workdir / "passwd"
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(self.passwd), "gateway", "s3cret"],
                       check=True, capture_output=True, timeout=30)

    def _command(self) -> list[str]:
        command = super()._command()
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            "per_listener_settings true\nuser root\npersistence false\nmax_queued_messages 0\n"
            "log_dest stderr\n"
            f"listener {self.port} {self.host}\nallow_anonymous true\n"
            f"listener {self.tls_port} {self.host}\n"
            f"cafile {self.pki['ca.pem']}\ncertfile {self.pki['server.pem']}\n"
            f"keyfile {self.pki['server.key']}\nrequire_certificate true\n"
            f"allow_anonymous false\npassword_file {self.passwd}\n")
        return command


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
        assert wait_until(lambda: spool.stats()["depth"] == 0)
        assert wait_until(lambda: len(collector.ids()) == len(rows))
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
            assert wait_until(lambda f=fwd: f.stats()["reconnects"] >= 2, 20)  # type: ignore[misc]
            assert words in fwd.last_error, fwd.last_error
            assert fwd.stats()["connections"] == 0
            assert fwd.state != "open"
        finally:
            fwd.stop(drain_timeout_s=0.2)
    assert spool.stats()["depth"] == 3
    spool.close()

"""Mosquitto with a TLS listener, and the test PKI it needs.

``make_pki`` writes a throwaway CA, a server certificate for 127.0.0.1 and a
client certificate. ``TlsBroker`` is a ``Broker`` with two listeners: a plain
one (for the start-up probe and test subscribers) and a TLS one that wants a
client certificate and a username/password (gateway / s3cret).
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from knute.tools.rig.broker import Broker, free_port

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

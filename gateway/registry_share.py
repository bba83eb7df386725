"""One registry for a city's gateways, shared over the broker with keys sealed per gateway.

Why the broker and not a shared database server (docs/operations.md, "Sharing
the registry"): every gateway already depends on the broker and keeps working
from its own copy when it is away; retained messages give a gateway that was
offline everything it missed the moment it reconnects; and a device key is
sealed for one gateway's public key, so neither the broker, its operator, its
persistence files nor a backup of them ever hold a key in the clear.

Messages (all retained, QoS 1):
- ``<prefix>/registry/<gateway-id>/<device>``: one device for one gateway,
  JSON ``{"v": 1, "op": "put"|"remove", "device", "version", "kind", "name",
  "site", "location", "fingerprint", "sealed"}`` and, for a device with its own
  send interval, ``"interval_s"`` (the silent-node alarm). ``sealed`` is the device key
  encrypted for that gateway: X25519 with a fresh ephemeral key, HKDF-SHA256,
  AES-128-GCM, the other fields (and the gateway id) as associated data, so
  nothing in the message can be swapped or replayed to another gateway.
  ``version`` grows with every change (milliseconds since 1970 at the
  operator, at least the previous version + 1); a tombstone (``remove``)
  stays retained so an offline gateway learns of the removal too.
- ``<prefix>/registry-check/<device>/<gateway-id>``: the key fingerprint each
  gateway holds for a device (8 bytes of SHA-256 of a domain tag and the key,
  which tells nothing about a random 128-bit key). Every gateway compares the
  others' fingerprints with its own: two gateways with different keys for
  one device are a conflict, reported (log, ``knute gateway status``), never
  resolved by either.

Rules at a gateway (``decide``, pure): a device it does not have is added; a
device that came from the share is updated or removed by a higher version and
left alone by a stale one; a device registered locally (``knute devices
add/import``) is never overwritten: the same key adopts it into the share, a
different key is a conflict.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from knute.gateway.device_fields import SEALED_PREFIX as SEALED_PREFIX  # re-exported
from knute.gateway.device_fields import (
    check_kind,
    format_device_id,
    parse_device_id,
    parse_interval,
)
from knute.gateway.device_fields import fingerprint as fingerprint  # re-exported
from knute.gateway.errors import KnuteError

FORMAT = 1
_INFO = b"knute registry share v1"


# -- keys of a gateway -------------------------------------------------------------------

def new_private_key_file(path: str) -> str:
    """Create a gateway's share key file (0600, 64 hex digits); returns its public key hex.

    An existing file is kept (and its public key returned): regenerating would
    lock the gateway out of everything sealed for it.
    """
    if os.path.exists(path):
        return public_hex(load_private_key(path))
    raw = X25519PrivateKey.generate().private_bytes_raw()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(raw.hex() + "\n")
    return public_hex(X25519PrivateKey.from_private_bytes(raw))


def load_private_key(path: str) -> X25519PrivateKey:
    """A gateway's share key from its file; KnuteError naming the file if unusable."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise KnuteError(f"share key {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KnuteError(f"share key {path}: not 64 hex digits") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KnuteError(f"share key {path}: readable by others (chmod 600 it)")
    return X25519PrivateKey.from_private_bytes(_key_bytes(text, f"share key {path}"))


def public_hex(private: X25519PrivateKey) -> str:
    """The public key that goes to the operator (64 hex digits)."""
    return private.public_key().public_bytes_raw().hex()


def parse_public(text: str) -> X25519PublicKey:
    """A gateway's public key from 64 hex digits; KnuteError otherwise."""
    text = text.strip()
    return X25519PublicKey.from_public_bytes(_key_bytes(text, f"public key {text[:16]!r}..."))


def _key_bytes(text: str, what: str) -> bytes:
    """The 32 bytes of an X25519 key written as 64 hex digits; KnuteError naming ``what``."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KnuteError(f"{what}: not 64 hex digits")
    return raw


# -- sealing -----------------------------------------------------------------------------

def _aead_key(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=epk + recipient,
                info=_INFO).derive(shared)


def seal_key(key: bytes, recipient: X25519PublicKey, aad: bytes) -> str:
    """``key`` encrypted for ``recipient``, bound to ``aad``: base64 of epk|nonce|ct."""
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes_raw()
    aead = _aead_key(eph.exchange(recipient), epk, recipient.public_bytes_raw())
    nonce = os.urandom(12)
    return base64.b64encode(epk + nonce + AESGCM(aead).encrypt(nonce, key, aad)).decode()


def open_key(sealed: str, private: X25519PrivateKey, aad: bytes) -> bytes:
    """The key sealed by ``seal_key`` for this private key; KnuteError if it is not."""
    try:
        blob = base64.b64decode(sealed, validate=True)
    except ValueError:
        raise KnuteError("sealed key is not base64") from None
    if len(blob) != 32 + 12 + 16 + 16:
        raise KnuteError("sealed key has the wrong length")
    epk, nonce, body = blob[:32], blob[32:44], blob[44:]
    mine = private.public_key().public_bytes_raw()
    aead = _aead_key(private.exchange(X25519PublicKey.from_public_bytes(epk)), epk, mine)
    try:
        return AESGCM(aead).decrypt(nonce, body, aad)
    except InvalidTag:
        raise KnuteError("sealed key does not open with this gateway's share key (sealed "
                         "for another gateway, or altered)") from None


# -- the messages ------------------------------------------------------------------------

@dataclass(frozen=True)
class Shared:
    """One device as the share states it for one gateway (``key`` None for a removal)."""

    op: str
    device_id: int
    version: int
    kind: str = ""
    name: str = ""
    site: str = ""
    location: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    key: bytes | None = None
    interval_s: float | None = None


# Bound as associated data. ``interval_s`` only when the message has it, so a message
# without one (a device on its kind's interval) is the same bytes as before the field.
_BOUND = ("v", "op", "device", "version", "kind", "name", "site", "location", "fingerprint")


def _aad(gateway_id: str, doc: dict[str, Any]) -> bytes:
    bound = {k: doc.get(k) for k in _BOUND}
    if "interval_s" in doc:
        bound["interval_s"] = doc["interval_s"]
    bound["gateway"] = gateway_id
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()


def put_message(*, gateway_id: str, recipient: X25519PublicKey, device_id: int, kind: str,
                key: bytes, name: str, site: str, location: dict[str, Any],
                version: int, interval_s: float | None = None) -> bytes:
    """The retained message that gives one gateway one device (key sealed for it)."""
    doc: dict[str, Any] = {"v": FORMAT, "op": "put", "device": format_device_id(device_id),
                           "version": version, "kind": kind, "name": name, "site": site,
                           "location": location, "fingerprint": fingerprint(key)}
    if interval_s is not None:
        doc["interval_s"] = interval_s
    doc["sealed"] = seal_key(key, recipient, _aad(gateway_id, doc))
    return json.dumps(doc, separators=(",", ":")).encode()


def remove_message(*, device_id: int, version: int) -> bytes:
    """The retained tombstone that removes one device from one gateway."""
    return json.dumps({"v": FORMAT, "op": "remove", "device": format_device_id(device_id),
                       "version": version}, separators=(",", ":")).encode()


def read_message(payload: bytes, *, gateway_id: str,
                 private: X25519PrivateKey | None) -> Shared:
    """Check one share message (and open its key with ``private``); KnuteError if bad."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise KnuteError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise KnuteError(f"not a version-{FORMAT} share message")
    op, version = doc.get("op"), doc.get("version")
    if op not in ("put", "remove"):
        raise KnuteError(f"op must be put or remove, got {op!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise KnuteError(f"version must be a non-negative integer, got {version!r}")
    device_id = parse_device_id(str(doc.get("device")))
    if op == "remove":
        return Shared("remove", device_id, version)
    kind, name, site, loc = (doc.get("kind"), doc.get("name", ""), doc.get("site", ""),
                             doc.get("location", {}))
    if not (isinstance(kind, str) and isinstance(name, str) and isinstance(site, str)
            and isinstance(loc, dict) and isinstance(doc.get("sealed"), str)):
        raise KnuteError("kind, name, site, location or sealed missing or of the wrong type")
    check_kind(kind)
    interval = None
    if "interval_s" in doc:
        if not isinstance(doc["interval_s"], int | float):
            raise KnuteError(f"interval_s: must be seconds, got {doc['interval_s']!r}")
        interval = parse_interval(doc["interval_s"])
    key = None
    if private is not None:
        key = open_key(doc["sealed"], private, _aad(gateway_id, doc))
        if len(key) != 16:
            raise KnuteError("sealed key is not 16 bytes")
    return Shared("put", device_id, version, kind, name, site, loc,
                  str(doc.get("fingerprint", "")), key, interval)


def next_version(previous: int | None, now: float | None = None) -> int:
    """A version above ``previous``: milliseconds since 1970, or previous + 1."""
    ms = int((time.time() if now is None else now) * 1000)
    return ms if previous is None or ms > previous else previous + 1


# -- what a gateway does with a message ------------------------------------------------

def decide(local: tuple[str, bytes, str, str, dict[str, Any], float | None] | None,
           local_version: int | None, shared: Shared) -> str:
    """What to do with ``shared`` given the local row (kind, key, name, site, location,
    interval_s) and the share version it came from (None: registered locally).

    One of: ``add``, ``update``, ``remove``, ``adopt`` (a local row with the same
    key joins the share), ``same``, ``stale``, ``conflict`` (a local row with
    another key: reported, kept), ``keep`` (a removal of a local row: kept).
    """
    if shared.op == "remove":
        if local is None:
            return "same"
        if local_version is None:
            return "keep"
        return "remove" if shared.version > local_version else "stale"
    if local is None:
        return "add"
    if local_version is None:
        return "adopt" if local[1] == shared.key else "conflict"
    if shared.version <= local_version:
        return "stale"
    wanted = (shared.kind, shared.key, shared.name, shared.site, shared.location,
              kept_interval(local, shared))
    return "same" if wanted == local else "update"


def kept_interval(local: tuple[Any, ...] | None, shared: Shared) -> float | None:
    """The send interval a device gets from ``shared``: the message's, or when it states
    none (an operator's knute before the field) the one the gateway holds."""
    if shared.interval_s is not None or local is None:
        return shared.interval_s
    held = local[5]
    return None if held is None else float(held)


def check_topic_parts(topic: str, prefix: str) -> tuple[int, str] | None:
    """(device_id, gateway id) of a ``<prefix>/registry-check/<device>/<gateway>`` topic."""
    head = prefix.split("/")
    parts = topic.split("/")
    if (len(parts) != len(head) + 3 or parts[:len(head)] != head
            or parts[len(head)] != "registry-check"):
        return None
    try:
        return parse_device_id(parts[-2]), parts[-1]
    except KnuteError:
        return None


def conflicts(own: dict[int, str], others: dict[tuple[int, str], str],
              own_gateway: str) -> list[dict[str, Any]]:
    """Devices for which another gateway holds a different key fingerprint than ours."""
    by_device: dict[int, dict[str, str]] = {}
    for (device_id, gateway), fp in others.items():
        if gateway != own_gateway and device_id in own and fp and fp != own[device_id]:
            by_device.setdefault(device_id, {})[gateway] = fp
    return [{"device": format_device_id(d), "gateways": {own_gateway: own[d], **g}}
            for d, g in sorted(by_device.items())]

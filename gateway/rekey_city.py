"""Key rotation with several gateways, each with its own registry (docs/operations.md,
"Several gateways: key rotation").

A rotation starts at one gateway (``knute devices send ID rekey`` there, or an MQTT
``rekey`` command, which the gateway it names takes). That gateway makes the next
key and offers it to every peer of ``[share.peers]``; the ``rekey`` downlink is due
only when every peer said it holds the key (``DownlinkStore.begin_rekey``,
``rekey_answer``). From then on any gateway accepts the node under the current
or the next key; the first uplink one of them verifies under the next key
commits it there, and that gateway tells the others, which commit too (as they
would by themselves on hearing the node under the new key).

Messages (retained, QoS 1, one per device and ordered pair of gateways, the
latest superseding the one before): ``<prefix>/downlink/rekey/<device>/<from>/<to>``,
JSON ``{"v": 1, "what", "device", "from", "to", "key_no", "fingerprint", "base",
"reason", "box"}``. ``what`` is ``offer`` (the origin's offer of the next key,
``base`` the fingerprint of the key it rotates from), ``hold`` or ``refuse`` (a
peer's answer, ``reason`` why not), ``commit`` (the next key is the device's key
now) or ``abort`` (the rotation was dropped before its ``rekey`` left; drop the
key). ``box`` is AES-128-GCM under a key only the two gateways can derive
(X25519 of the sender's share key and the recipient's public one, HKDF-SHA256
bound to both ids and the direction), the other fields as associated data; an
offer's box holds the key, every other box is empty and only authenticates. So
the key is never in the clear on the broker, and nobody but a configured peer
can offer a key, confirm one or commit one: a forged confirmation would let the
``rekey`` go out before a peer holds the key. The messages hold no secret in
their ids: a fingerprint is 8 bytes of SHA-256 of a tag and the key.

Every message is the state of a row of the store's outbox (``rekey_outbox``),
written in the same transaction as the change it tells; the pump publishes a
row when it changed, and every row once after a start, so a power cut between
the commit and the publication loses nothing, and a gateway that was down gets
the latest word of each peer from the retained messages. A row other than a
pending offer is forgotten 30 days after its last change (its message stays
retained).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from knute.gateway.downlink_commands import Command
from knute.gateway.downlink_rekey import RekeyOut
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.errors import KnuteError
from knute.gateway.logsafe import clean

log = logging.getLogger("knute.downlinks.rekey")

FORMAT = 1
WHATS = ("offer", "hold", "refuse", "commit", "abort")
_INFO = b"knute rekey v1"
_BOUND = ("v", "what", "device", "from", "to", "key_no", "fingerprint", "base", "reason")
MAX_MESSAGE = 4096
PUMP_EVERY_S = 0.5


@dataclass(frozen=True)
class RekeyMessage:
    """One rotation message between two gateways, checked and opened."""

    what: str
    device_id: int
    sender: str
    recipient: str
    key_no: int
    fingerprint: str
    base: str = ""
    reason: str = ""
    key: bytes | None = None


def pair_key(private: X25519PrivateKey, peer: X25519PublicKey, sender: str,
             recipient: str) -> bytes:
    """The AES-GCM key of messages from ``sender`` to ``recipient`` (either side can
    derive it: X25519 is symmetric; the ids make each direction's key its own)."""
    info = _INFO + b"\0" + sender.encode() + b"\0" + recipient.encode()
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None,
                info=info).derive(private.exchange(peer))


def topic(prefix: str, device_id: int, sender: str, recipient: str) -> str:
    """Where ``sender`` keeps its word to ``recipient`` about a device's rotation."""
    return f"{prefix}/downlink/rekey/{device_id:08x}/{sender}/{recipient}"


def _aad(doc: Mapping[str, object]) -> bytes:
    return json.dumps({k: doc.get(k) for k in _BOUND}, sort_keys=True,
                      separators=(",", ":")).encode()


def encode(msg: RekeyMessage, key: bytes) -> bytes:
    """The retained message for ``msg``, sealed with the pair key ``key``."""
    doc: dict[str, object] = {
        "v": FORMAT, "what": msg.what, "device": f"{msg.device_id:08x}", "from": msg.sender,
        "to": msg.recipient, "key_no": msg.key_no, "fingerprint": msg.fingerprint,
        "base": msg.base, "reason": msg.reason}
    nonce = os.urandom(12)
    body = AESGCM(key).encrypt(nonce, msg.key or b"", _aad(doc))
    doc["box"] = base64.b64encode(nonce + body).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(payload: bytes, *, me: str, private: X25519PrivateKey,
           peers: Mapping[str, X25519PublicKey]) -> RekeyMessage:
    """Check and open one message addressed to ``me``; KnuteError saying what is wrong."""
    if len(payload) > MAX_MESSAGE:
        raise KnuteError(f"longer than {MAX_MESSAGE} bytes")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise KnuteError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise KnuteError(f"not a version-{FORMAT} rotation message")
    what, sender, key_no = doc.get("what"), doc.get("from"), doc.get("key_no")
    if what not in WHATS:
        raise KnuteError(f"what must be one of {', '.join(WHATS)}, got {what!r}")
    if doc.get("to") != me:
        raise KnuteError(f"addressed to {doc.get('to')!r}, not this gateway")
    if not isinstance(sender, str) or sender not in peers:
        raise KnuteError(f"from {sender!r}, not a gateway of [share.peers]")
    if isinstance(key_no, bool) or not isinstance(key_no, int) or not 0 <= key_no <= 255:
        raise KnuteError(f"key_no must be 0..255, got {key_no!r}")
    texts = [doc.get(k) for k in ("device", "fingerprint", "base", "reason", "box")]
    if not all(isinstance(t, str) for t in texts):
        raise KnuteError("device, fingerprint, base, reason or box missing or not text")
    try:
        device_id = int(str(doc["device"]), 16)
        blob = base64.b64decode(str(doc["box"]), validate=True)
    except ValueError:
        raise KnuteError("device is not hex or box is not base64") from None
    if len(blob) < 12 + 16:
        raise KnuteError("box too short")
    try:
        plain = AESGCM(pair_key(private, peers[sender], sender, me)).decrypt(
            blob[:12], blob[12:], _aad(doc))
    except InvalidTag:
        raise KnuteError(f"does not verify under {sender}'s share key (forged or "
                         "altered)") from None
    if (what == "offer") != (len(plain) == 16):
        raise KnuteError("an offer carries one 16-byte key, nothing else does")
    return RekeyMessage(str(what), device_id, sender, me, key_no, str(doc["fingerprint"]),
                        str(doc["base"]), str(doc["reason"]), plain or None)


StatusFn = Callable[[list[Command]], None]


class RekeyCity:
    """One gateway's side of the rotations: answer what the peers say, publish the outbox.

    ``publish(topic, payload)`` sends a retained QoS 1 message (the city channel's
    client); ``on_status`` gets commands whose state changed here; ``on_keys`` is
    called when the pending next keys changed (the pipeline's keys).
    """

    def __init__(self, store: DownlinkStore, *, prefix: str, gateway_id: str,
                 private: X25519PrivateKey, peers: Mapping[str, X25519PublicKey],
                 publish: Callable[[str, bytes], None], on_status: StatusFn,
                 on_keys: Callable[[], None] | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.private = private
        self.peers = dict(peers)
        self.publish = publish
        self.on_status = on_status
        self.on_keys = on_keys or (lambda: None)
        self._keys = {p: pair_key(private, pub, gateway_id, p) for p, pub in peers.items()}
        self._sent: dict[tuple[int, str], tuple[str, int, str, str, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.figures = {"published": 0, "heard": 0, "bad_messages": 0, "offers_held": 0,
                        "offers_refused": 0, "commits_heard": 0, "aborts_heard": 0,
                        "ready": 0}

    # -- the city channel --------------------------------------------------------------

    def topic_filter(self) -> str:
        """The messages addressed to this gateway."""
        return f"{self.prefix}/downlink/rekey/+/+/{self.gateway_id}"

    def owns(self, topic_name: str) -> bool:
        """Whether a message of the city channel is one of these."""
        return topic_name.startswith(f"{self.prefix}/downlink/rekey/")

    def connected_again(self) -> None:
        """The channel (re)connected: publish what waits. (Rows published before are not
        published again: the persistent session delivers what was in flight, and the
        broker keeps them retained; after a restart every row is published once.)"""
        self.connected = True
        self._wake.set()

    def disconnected(self) -> None:
        """The channel is down: publish nothing until it is back."""
        self.connected = False

    def handle(self, topic_name: str, payload: bytes) -> None:
        """One message from a peer (the channel's network thread); never raises."""
        if not payload:
            return                              # a cleared retained message
        try:
            msg = decode(payload, me=self.gateway_id, private=self.private, peers=self.peers)
            if topic_name != topic(self.prefix, msg.device_id, msg.sender, msg.recipient):
                raise KnuteError("topic does not match the message")
        except KnuteError as exc:
            self.figures["bad_messages"] += 1
            log.warning("key rotation: message on %s ignored: %s", clean(topic_name),
                        clean(str(exc)))
            return
        self.figures["heard"] += 1
        try:
            self._apply(msg)
        except Exception as exc:            # a database hiccup: the retained message stays
            log.error("key rotation: %s from %s for device %08x not applied: %s", msg.what,
                      msg.sender, msg.device_id, exc)

    def _apply(self, msg: RekeyMessage) -> None:
        dev, store = msg.device_id, self.store
        if msg.what == "offer":
            assert msg.key is not None
            answer, reason = store.rekey_offer(dev, msg.sender, msg.key_no, msg.key, msg.base)
            if answer == "hold":
                self.figures["offers_held"] += 1
                log.info("device %08x: holds next key %d (%s) offered by %s", dev,
                         msg.key_no, msg.fingerprint, msg.sender)
            else:
                self.figures["offers_refused"] += 1
                log.error("device %08x: next key %d offered by %s refused: %s", dev,
                          msg.key_no, msg.sender, reason)
            self.on_keys()
            self._wake.set()
        elif msg.what in ("hold", "refuse"):
            event, cmd = store.rekey_answer(dev, msg.sender, msg.what, msg.key_no,
                                            msg.fingerprint, msg.reason)
            if event == "ready":
                self.figures["ready"] += 1
                log.info("device %08x: every peer holds next key %d; the rekey may go out",
                         dev, msg.key_no)
            elif event == "refused":
                log.error("device %08x: %s refused next key %d (%s); the rotation is "
                          "dropped", dev, msg.sender, msg.key_no, msg.reason)
                self.on_keys()
                self._wake.set()
                if cmd is not None:
                    self.on_status([cmd])
        elif msg.what == "commit":
            self.figures["commits_heard"] += 1
            changed = store.rekey_commit_notice(dev, msg.fingerprint)
            if changed or store.rekey_state(dev).next_key is None:
                self.on_keys()
            if changed:
                log.info("device %08x: key %d committed (told by %s)", dev, msg.key_no,
                         msg.sender)
                self.on_status(changed)
        elif msg.what == "abort":
            self.figures["aborts_heard"] += 1
            if store.rekey_abort(dev, msg.sender, msg.fingerprint):
                log.info("device %08x: next key %d dropped: %s ended the rotation before "
                         "sending it", dev, msg.key_no, msg.sender)
                self.on_keys()

    # -- the outbox ----------------------------------------------------------------------

    def pump(self) -> int:
        """Publish the outbox rows that changed since they were last published (all of
        them after a reconnection); how many were published."""
        if not self.connected:
            return 0
        published = 0
        for row in self.store.rekey_outbox():
            if row.gateway not in self._keys:
                continue                    # a peer no longer configured
            mark = (row.what, row.key_no, row.fingerprint, row.base, row.reason)
            slot = (row.device_id, row.gateway)
            with self._lock:
                if self._sent.get(slot) == mark:
                    continue
            self.publish(topic(self.prefix, row.device_id, self.gateway_id, row.gateway),
                         self.message(row))
            with self._lock:
                self._sent[slot] = mark
            published += 1
        self.figures["published"] += published
        return published

    def message(self, row: RekeyOut) -> bytes:
        """The sealed message of one outbox row."""
        return encode(RekeyMessage(row.what, row.device_id, self.gateway_id, row.gateway,
                                   row.key_no, row.fingerprint, row.base, row.reason,
                                   row.key), self._keys[row.gateway])

    def poke(self) -> None:
        """Something was written to the outbox: publish soon."""
        self._wake.set()

    def start(self) -> None:
        """Start the pump thread."""
        self._thread = threading.Thread(target=self._run, name="rekey-city", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the pump thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(PUMP_EVERY_S)
            self._wake.clear()
            try:
                self.pump()
            except Exception as exc:  # the next round tries again
                log.error("key rotation: outbox not published: %s", exc)

    def stats(self) -> dict[str, object]:
        """For ``knute gateway status``."""
        return {"peers": sorted(self.peers), **self.figures}

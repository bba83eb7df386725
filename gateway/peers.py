"""Replay state shared by a city's gateways: learn what the others accepted.

A frame captured near gateway A and replayed near gateway B must be rejected
at B as ``replay`` even if B never heard the device. Every accepted reading a
gateway publishes names its device and its frame counter (and its counter
epoch when not 0), so each gateway subscribes to ``<prefix>/+/+/up`` and raises
its own replay counter of a device to the highest counter any other gateway
accepted in the same epoch. No new message, no key and no extra broker state
beyond one subscription.

- ``parse_reading`` (pure) turns one message into ``(device_id, fcnt, epoch)``
  or None: another gateway's reading, well formed; anything else is ignored
  (a malformed message is counted, never raises).
- ``CounterInbox`` (pure, thread safe) keeps the highest counter per device
  until the ingest loop takes them; the daemon applies them to the pipeline's
  ``ReplayGuard`` and to the spool's replay table (``Spool.learn_counters``),
  so they survive a restart.
- ``PeerListener`` is the I/O shell: one paho client on its own thread
  (``knute-peers``), a persistent session (``clean_session`` false, client id
  ``<client_id>-peers``, QoS 1) so a gateway that was down or cut off gets
  the readings it missed when it returns, as far as the broker keeps them
  (Mosquitto's ``max_queued_messages``, RabbitMQ's durable queue). It goes
  through ``[mqtt] brokers`` in order like the forwarder and backs off with
  gateway.link's jittered backoff.

Trust: a reading on the broker raises a counter, so only gateways may publish
under ``<prefix>/+/+/up`` (broker ACL, docs/operations.md); a forged high
counter would make a device's next frames look like replays.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from knute.gateway.config import MqttConfig
from knute.gateway.link import Backoff

log = logging.getLogger("knute.peers")

THREAD_NAME = "knute-peers"
MAX_FCNT = (1 << 32) - 1
MAX_PENDING = 1_000_000      # devices waiting for the ingest loop; beyond that, dropped


def parse_reading(topic: str, payload: bytes, *, prefix: str,
                  own_gateway: str) -> tuple[int, int, int] | None:
    """(device_id, fcnt, epoch) of another gateway's reading on ``topic``, else None."""
    parts = topic.split("/")
    head = prefix.split("/")
    if len(parts) != len(head) + 3 or parts[:len(head)] != head or parts[-1] != "up":
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    device, fcnt, epoch = doc.get("device"), doc.get("fcnt"), doc.get("epoch", 0)
    gateway = doc.get("gateway")
    if (not isinstance(device, str) or len(device) != 8 or device != parts[-2]
            or not isinstance(fcnt, int) or isinstance(fcnt, bool) or not 0 <= fcnt <= MAX_FCNT
            or not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0
            or not isinstance(gateway, str) or gateway == own_gateway):
        return None
    try:
        device_id = int(device, 16)
    except ValueError:
        return None
    return device_id, fcnt, epoch


class CounterInbox:
    """The highest counter per (device, epoch) heard from other gateways, until taken."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._pending: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.heard = 0           # other gateways' readings parsed
        self.ignored = 0         # messages that were not another gateway's reading
        self.dropped = 0         # devices dropped because the inbox was full

    def offer(self, device_id: int, fcnt: int, epoch: int) -> None:
        """Keep (fcnt, epoch) if it is the device's highest so far (later epoch first)."""
        with self._lock:
            self.heard += 1
            known = self._pending.get(device_id)
            if known is None and len(self._pending) >= self.max_pending:
                self.dropped += 1
                return
            if known is None or (epoch, fcnt) > (known[1], known[0]):
                self._pending[device_id] = (fcnt, epoch)

    def ignore(self) -> None:
        """Count one message that was not another gateway's reading."""
        with self._lock:
            self.ignored += 1

    def pending(self) -> int:
        """Devices waiting for the ingest loop."""
        with self._lock:
            return len(self._pending)

    def take(self) -> dict[int, tuple[int, int]]:
        """Everything offered since the last take: device_id -> (fcnt, epoch)."""
        with self._lock:
            out, self._pending = self._pending, {}
        return out


class PeerListener:
    """The gateway's listening connection to the city's other gateways.

    With an ``inbox`` it subscribes to every reading and feeds the inbox; with
    ``extra_topics`` it also hands those topics' messages to ``on_other`` (on
    this thread: it must not block), which is how the shared registry arrives
    (gateway.registry_share). ``publish_retained`` keeps retained messages of
    this gateway on the broker, sent again after every reconnect.
    """

    def __init__(self, cfg: MqttConfig, *, gateway_id: str, inbox: CounterInbox | None,
                 extra_topics: Sequence[str] = (),
                 on_other: Callable[[str, bytes], None] | None = None) -> None:
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.inbox = inbox if inbox is not None else CounterInbox()
        self.client_id = f"{cfg.client_id or 'knute-' + gateway_id}-peers"
        self.topics = ([f"{cfg.prefix}/+/+/up"] if inbox is not None else []) + list(extra_topics)
        self._on_other = on_other
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._out_lock = threading.Lock()
        self._brokers = cfg.broker_list
        self._index = 0
        self._backoff = Backoff(cfg.backoff_min_s, cfg.backoff_max_s)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.subscribed = False
        self.connections = 0
        self.last_error = ""

    def start(self) -> None:
        """Start the listener thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the listener thread (the broker keeps the session)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.connect_timeout_s + 5)
            self._thread = None

    def publish_retained(self, items: dict[str, bytes | None]) -> None:
        """Keep these retained messages published (None: clear the topic's message)."""
        with self._out_lock:
            for topic, payload in items.items():
                if payload is None:
                    if self._retained.pop(topic, None) is not None:
                        self._dirty.add(topic)
                elif self._retained.get(topic) != payload:
                    self._retained[topic] = payload
                    self._dirty.add(topic)

    def _flush(self, client: mqtt.Client) -> None:
        with self._out_lock:
            dirty, self._dirty = self._dirty, set()
            out = [(t, self._retained.get(t, b"")) for t in sorted(dirty)]
        for topic, payload in out:
            client.publish(topic, payload, qos=1, retain=True)

    def stats(self) -> dict[str, Any]:
        """For ``knute gateway status``: connection, broker and what was learned."""
        host, port = self._brokers[self._index]
        return {"connected": self.connected, "subscribed": self.subscribed,
                "broker": f"{host}:{port}", "connections": self.connections,
                "heard": self.inbox.heard, "ignored": self.inbox.ignored,
                "dropped": self.inbox.dropped, "pending": self.inbox.pending(),
                "last_error": self.last_error}

    # -- the thread ----------------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=False)
        client.connect_timeout = cfg.connect_timeout_s
        cfg.configure_client(client)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _run(self) -> None:
        while not self._halt.is_set():
            host, port = self._brokers[self._index]
            opened = False
            try:
                client = self._client()
                client.connect(host, port, self.cfg.keepalive)
                while not self._halt.is_set():
                    if client.loop(timeout=0.2) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    opened = opened or self.connected
                    if self.connected:
                        self._flush(client)
                self.last_error = "" if self._halt.is_set() else "connection lost"
                if self._halt.is_set():
                    client.disconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.last_error = f"{host}:{port}: {exc}"
            except Exception as exc:  # never let the listener die of a surprise
                log.exception("peer listener failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.connected = self.subscribed = False
            if self._halt.is_set():
                break
            if opened:
                self._backoff.reset()
            else:
                self._index = (self._index + 1) % len(self._brokers)
            self._halt.wait(self._backoff.next())

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"broker refused the connection: {reason}"
            return
        self.connected = True
        self.connections += 1
        with self._out_lock:
            self._dirty |= set(self._retained)
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed = True

    def _on_message(self, _client: mqtt.Client, _userdata: Any,
                    msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/up"):
            if self._on_other is not None:
                self._on_other(msg.topic, bytes(msg.payload))
            return
        got = parse_reading(msg.topic, bytes(msg.payload), prefix=self.cfg.prefix,
                            own_gateway=self.gateway_id)
        if got is None:
            self.inbox.ignore()
        else:
            self.inbox.offer(*got)

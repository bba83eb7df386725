"""The rig's MQTT subscriber: one client that subscribes and keeps what arrives.

Tests, the demo and the benchmarks stand for the city's backend with it. It
connects on its own connection, subscribes again after every reconnect (so it
follows a broker restart), and keeps every message with its topic, payload,
retain flag and QoS, in arrival order. ``on_message`` lets a caller fold
messages into its own tally instead (the demo's screen, a benchmark's
counts). Waits go through ``tools.rig.wait.wait_for``: a condition, never a
sleep.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from knute.tools.rig.wait import DEFAULT_TIMEOUT_S, WaitTimeout, wait_for

SUBACK_TIMEOUT_S = 15.0     # an upper bound on the first subscription, never a speed check


@dataclass(frozen=True)
class Message:
    """One message as the subscriber received it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    def doc(self) -> Any:
        """The payload as JSON."""
        return json.loads(self.payload)


class Subscriber:
    """An MQTT client subscribed to ``topics`` that keeps (or hands on) every message.

    ``Subscriber(host, port, "city/+/+/up")`` returns once the broker has
    acknowledged the subscription; ``close()`` (or leaving a ``with`` block)
    disconnects and stops the client's thread. ``disconnect()`` and
    ``connect()`` take the subscriber away and back (same client id, so a
    persistent session, ``clean_session=False``, gets what it missed).
    """

    def __init__(self, host: str, port: int, topics: str | Sequence[str], *, qos: int = 1,
                 client_id: str = "", clean_session: bool = True,
                 username: str | None = None, password: str | None = None,
                 keepalive: int = 30, reconnect_s: float = 1.0,
                 on_message: Callable[[Message], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.client_id = client_id or f"rig-sub-{os.getpid()}-{id(self):x}"
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.reconnect_s = reconnect_s
        self._auth = (username, password)
        self._handler = on_message
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self.connects = 0                       # CONNACKs so far
        self.subscribed = threading.Event()     # a SUBACK arrived (since the last connect())
        self.disconnected = threading.Event()   # the connection was lost or closed
        self.client: mqtt.Client | None = None
        self.connect()

    # -- the connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and subscribe; returns once the SUBACK arrived (WaitTimeout if not)."""
        self.subscribed.clear()
        self.disconnected.clear()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=self.clean_session)
        if self._auth[0]:
            client.username_pw_set(*self._auth)
        client.reconnect_delay_set(max(1, round(self.reconnect_s)),
                                   max(1, round(self.reconnect_s)))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.connect(self.host, self.port, self.keepalive)
        client.loop_start()
        self.client = client
        if not self.subscribed.wait(SUBACK_TIMEOUT_S):
            self.disconnect()
            raise WaitTimeout(f"subscriber {self.client_id}: no SUBACK from "
                              f"{self.host}:{self.port} in {SUBACK_TIMEOUT_S:g} s")

    def disconnect(self) -> None:
        """Disconnect and stop the client's thread (messages kept so far stay)."""
        client, self.client = self.client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def close(self) -> None:
        """The same as ``disconnect``: the subscriber is done."""
        self.disconnect()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- callbacks (the client's thread) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, _reason: Any,
                    _props: Any) -> None:
        self.connects += 1
        client.subscribe([(topic, self.qos) for topic in self.topics])

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any,
                    msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), int(msg.qos))
        if self._handler is not None:
            self._handler(message)
            return
        with self._lock:
            self._messages.append(message)

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected.set()

    # -- what arrived --------------------------------------------------------------------

    def messages(self, suffix: str = "", *, topic: str | None = None) -> list[Message]:
        """The messages so far, in arrival order: every one, those whose topic ends
        with ``suffix``, or those on exactly ``topic``."""
        with self._lock:
            got = list(self._messages)
        if topic is not None:
            return [m for m in got if m.topic == topic]
        return [m for m in got if m.topic.endswith(suffix)]

    def docs(self, suffix: str = "", *, topic: str | None = None) -> list[Any]:
        """The JSON payloads of ``messages(suffix, topic=topic)``."""
        return [m.doc() for m in self.messages(suffix, topic=topic)]

    def first_copies(self, suffix: str = "", *, topic: str | None = None) -> list[Any]:
        """``docs(suffix, topic=topic)`` without repeats: QoS 1 delivers at least once, so
        a message may come again (a reading with the same ``id``, any other message
        byte for byte); the first copy of each is kept, in arrival order."""
        out: list[Any] = []
        seen: set[object] = set()
        for m in self.messages(suffix, topic=topic):
            doc = m.doc()
            key = doc["id"] if isinstance(doc, dict) and "id" in doc else m.payload
            if key not in seen:
                seen.add(key)
                out.append(doc)
        return out

    def readings(self) -> list[dict[str, Any]]:
        """The readings (JSON of the ``.../up`` messages) in arrival order, copies included."""
        return [doc for doc in self.docs("/up") if isinstance(doc, dict)]

    def ids(self) -> set[str]:
        """The distinct ids of the readings so far."""
        return {str(doc["id"]) for doc in self.readings()}

    def wait_count(self, count: int, suffix: str = "", *,
                   timeout: float = DEFAULT_TIMEOUT_S) -> list[Message]:
        """Wait until at least ``count`` messages (ending with ``suffix``) arrived."""
        def enough() -> list[Message]:
            got = self.messages(suffix)
            return got if len(got) >= count else []

        return wait_for(enough, timeout,
                        f"{count} messages{f' on *{suffix}' if suffix else ''}")

    def wait(self, condition: Callable[[list[Message]], Any], what: str, *,
             timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """Wait until ``condition(messages so far)`` is truthy, and return its value."""
        return wait_for(lambda: condition(self.messages()), timeout, what)

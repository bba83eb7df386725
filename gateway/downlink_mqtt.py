"""Commands from MQTT: ``<prefix>/<kind>/<device>/down`` (docs/mqtt.md).

A listener of its own (paho-mqtt, its own network thread) subscribes at QoS 1
with a persistent session (client id ``<mqtt client id>-down``, clean session
off), so commands published while the gateway is down are delivered when it
is back. Each message is one JSON object (docs/schema/downlink_command.schema.json):

    {"id": "ops-2026-12-01-17", "command": "config",
     "values": {"water.sends_per_day": 4}, "expires_in_s": 86400}

``id`` is the caller's reference, unique per device: a message delivered twice
(QoS 1 is at least once; several gateways share one registry) is queued once.
A message that cannot be queued (not JSON, an unknown command, a value out of
range, a device not registered with that kind, a full queue) is answered on
the status topic with ``"state": "refused"`` and a one-line ``error``, and
logged (rate-limited); nothing is queued.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from knute.gateway.config import MqttConfig
from knute.gateway.downlink_commands import Command
from knute.gateway.downlink_plan import config_values
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.errors import KnuteError
from knute.gateway.logsafe import EventLog, clean
from knute.gateway.message import iso_utc

log = logging.getLogger("knute.downlinks.mqtt")

COMMANDS = ("time", "config", "ack", "rekey", "reboot")
MAX_MESSAGE = 4096
_KEYS = {"id", "command", "values", "bits", "expires_in_s", "gateway"}

KindOf = Callable[[int], str | None]
StatusFn = Callable[[Command, str], None]
RefusedFn = Callable[[str, int, dict[str, Any]], None]


def parse_command(payload: bytes) -> dict[str, Any]:
    """The checked command object of one message; KnuteError naming the problem."""
    if len(payload) > MAX_MESSAGE:
        raise KnuteError(f"message longer than {MAX_MESSAGE} bytes")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise KnuteError("not a JSON object") from None
    if not isinstance(doc, dict):
        raise KnuteError("not a JSON object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise KnuteError(f"unknown key {unknown[0]!r}")
    ref = doc.get("id")
    if not isinstance(ref, str) or not 1 <= len(ref) <= 64:
        raise KnuteError("id must be a string of 1..64 characters")
    command = doc.get("command")
    if command not in COMMANDS:
        raise KnuteError(f"command must be one of {', '.join(COMMANDS)}")
    out: dict[str, Any] = {"id": ref, "command": command, "args": {}}
    values = doc.get("values")
    if command == "config":
        if not isinstance(values, dict) or not values:
            raise KnuteError("config needs a non-empty 'values' object")
        pairs = []
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise KnuteError(f"config {key}: value must be an integer")
            pairs.append(f"{key}={value}")
        out["args"] = {"values": config_values(pairs)}
    elif values is not None:
        raise KnuteError(f"{command} takes no 'values'")
    bits = doc.get("bits")
    if bits is not None:
        if command != "ack":
            raise KnuteError(f"{command} takes no 'bits'")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 0xFFFFFF:
            raise KnuteError("bits must be an integer 0..16777215")
        out["args"] = {"bits": bits}
    gateway = doc.get("gateway")
    if gateway is not None:
        if command != "rekey":
            raise KnuteError(f"{command} takes no 'gateway'")
        if not isinstance(gateway, str) or not 1 <= len(gateway) <= 64:
            raise KnuteError("gateway must be a gateway id of 1..64 characters")
        out["gateway"] = gateway
    expires = doc.get("expires_in_s")
    if expires is not None:
        if (isinstance(expires, bool) or not isinstance(expires, int | float)
                or not 1 <= expires <= 3650 * 86400):
            raise KnuteError("expires_in_s must be a number of seconds, 1..3650 days")
        out["expires_in_s"] = float(expires)
    return out


def session_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """A paho client for a side channel of the gateway (commands, downlink claims).

    A persistent session (QoS 1 messages wait at the broker while the gateway is
    away), the forwarder's credentials and TLS, and paho's own reconnect with the
    forwarder's back-off bounds; the caller sets the callbacks.
    """
    v5 = cfg.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else False)
    cfg.configure_client(client)
    client.reconnect_delay_set(max(1, round(cfg.backoff_min_s)), max(1, round(cfg.backoff_max_s)))
    return client


def connect_session(client: mqtt.Client, cfg: MqttConfig, session_s: int) -> None:
    """Connect `client` in the background, its session kept `session_s` on MQTT 5."""
    if cfg.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_s
        client.connect_async(cfg.host, cfg.port, cfg.keepalive, clean_start=False,
                             properties=props)
    else:
        client.connect_async(cfg.host, cfg.port, cfg.keepalive)
    client.loop_start()


class SessionChannel:
    """A side channel on a paho session of its own (``session_client``): connected in
    the background, with ``connected`` and ``subscribed`` for the status.

    The command topics and the city's downlink claims are both such channels; each
    says what it subscribes to once connected (``_subscribe``) and what a message
    does (``_on_message``). A refused connection is one warning in the channel's log.
    """

    def __init__(self, cfg: MqttConfig, client_id: str, *, session_s: int,
                 channel_log: logging.Logger, name: str) -> None:
        self.cfg = cfg
        self.connected = False
        self.subscribed = False
        self._session_s = session_s
        self._log = channel_log
        self._name = name
        self._client = session_client(cfg, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself)."""
        connect_session(self._client, self.cfg, session_s=self._session_s)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def _subscribe(self, client: mqtt.Client) -> None:
        raise NotImplementedError

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        raise NotImplementedError

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._log.warning("%s: broker refused the connection: %s", self._name, reason)
            return
        self.connected = True
        self._subscribe(client)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any = None) -> None:
        self.subscribed = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        self.connected = self.subscribed = False


class CommandListener(SessionChannel):
    """Subscribes to the command topics and queues what arrives in the store."""

    def __init__(self, cfg: MqttConfig, store: DownlinkStore, kind_of: KindOf,
                 on_status: StatusFn, on_refused: RefusedFn, *, gateway_id: str,
                 client_id: str) -> None:
        super().__init__(cfg, f"{client_id}-down", session_s=7 * 86400, channel_log=log,
                         name="command topics")
        self.store = store
        self.kind_of = kind_of
        self.on_status = on_status
        self.on_refused = on_refused
        self.gateway_id = gateway_id
        self.topic = f"{cfg.prefix}/+/+/down"
        self.received = 0
        self.refused = 0
        self.rekey_elsewhere = 0        # rekey commands another gateway starts
        self._events = EventLog(log, period_s=60.0)

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        self.received += 1
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception as exc:  # never let one message stop the network thread
            log.error("command on %s not handled: %s", clean(msg.topic), exc)

    def handle(self, topic: str, payload: bytes) -> Command | None:
        """Queue one command message; None (and a ``refused`` status) if it cannot be."""
        parts = topic.split("/")
        kind, device = parts[-3], parts[-2]
        try:
            device_id = int(device, 16)
            if len(device) != 8:
                raise ValueError
        except ValueError:
            self._refuse(kind, None, topic, {}, "the topic's device is not 8 hex digits")
            return None
        ref: Any = None
        try:
            try:
                probe = json.loads(payload)
                ref = probe.get("id") if isinstance(probe, dict) else None
            except (ValueError, UnicodeDecodeError):
                pass
            registered = self.kind_of(device_id)
            if registered is None:
                raise KnuteError(f"device {device} is not registered")
            if registered != kind:
                raise KnuteError(f"device {device} is registered as {registered}, not {kind}")
            cmd = parse_command(payload)
            if cmd["command"] == "rekey":
                import os

                if not self._starts_rekey(cmd):
                    self.rekey_elsewhere += 1
                    return None
                queued = self.store.begin_rekey(device_id, os.urandom(16), ref=cmd["id"],
                                                expiry_s=cmd.get("expires_in_s"))
                new = True
            else:
                queued, new = self.store.queue(device_id, cmd["command"], cmd["args"],
                                               ref=cmd["id"], expiry_s=cmd.get("expires_in_s"))
        except KnuteError as exc:
            ok_ref = isinstance(ref, str) and 1 <= len(ref) <= 64
            self._refuse(kind, device_id, topic, {"id": ref if ok_ref else None}, str(exc))
            return None
        if new:
            self.on_status(queued, kind)
        return queued

    def _starts_rekey(self, cmd: dict[str, Any]) -> bool:
        """Several gateways: only one starts a rotation (each would make its own key),
        the one the command names in ``gateway``, or without a name the one with
        ``gateway_index`` 0. The others get the key from it (gateway.rekey_city)."""
        index, count = self.store.stride
        if count <= 1:
            return True
        named = cmd.get("gateway")
        return bool(named == self.gateway_id) if named is not None else index == 0

    def _refuse(self, kind: str, device_id: int | None, topic: str, doc: dict[str, Any],
                error: str) -> None:
        self.refused += 1
        self._events.event(("refused", kind), f"command on {clean(topic)} refused: "
                           f"{clean(error)}")
        if device_id is None:
            return
        self.on_refused(kind, device_id, {
            "device": f"{device_id:08x}", "kind": kind, "id": doc.get("id"), "state": "refused",
            "error": error, "at": iso_utc(time.time()), "gateway": self.gateway_id})

    def stats(self) -> dict[str, Any]:
        """Counters for the status report."""
        return {"connected": self.connected, "subscribed": self.subscribed,
                "received": self.received,
                "refused": self.refused, "rekey_elsewhere": self.rekey_elsewhere}

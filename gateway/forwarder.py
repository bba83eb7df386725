"""The forwarder: spool rows to the MQTT broker with QoS 1, deleted only on PUBACK.

Design
------
- One worker thread drives paho-mqtt 2.x as an external event loop
  (``select`` on the client's socket plus a wake-up socket, then
  ``loop_read``/``loop_write``/``loop_misc``), so nothing else in the process
  shares paho's state.
- Each connection is a NEW paho client with a clean session. Nothing of
  paho's in-memory queue survives a disconnect: at every (re)connect the
  worker starts again from the oldest row still in the spool. A row leaves
  the spool only when its PUBACK arrives with a success reason code.
- At most ``max_inflight`` rows are published and not yet acknowledged
  (MQTT 5: also at most the broker's Receive Maximum). Rows go out in spool
  order, which is per-device frame-counter order; a broker processes the
  PUBLISHes of one connection in order. After a reconnect the unacknowledged
  rows are sent again, in order, so a consumer may see a duplicate of a
  reading (same ``id``) but never a device's readings out of order. The one
  exception: an MQTT 5 PUBACK with an error reason (quota exceeded, not
  authorized) keeps its row and forces a reconnect, while later rows of the
  same window may already have been delivered.
- Acknowledged rows are deleted in batches (``ack_batch`` rows or
  ``ack_interval_s``, whichever first) and always before a reconnect.
- Reconnects use capped exponential backoff with jitter
  (``backoff_min_s`` doubling up to ``backoff_max_s``, each delay drawn
  uniformly from its upper half).
- A supervisor thread watches the worker: a worker thread that died is
  restarted, one whose heartbeat is older than ``stall_timeout_s`` is
  abandoned and replaced (it exits when it wakes up), and while the link is
  down a warning is logged every ``down_warn_s``. A connection whose
  in-flight messages get no PUBACK for ``ack_timeout_s`` is dropped and
  re-established; paho's keepalive catches a silent broker.
- Status: ``<prefix>/gateway/<id>/status``, retained, QoS 1: "online" with
  counters at connect and every ``status_interval_s``; the will (LWT) is
  "offline"; a clean stop publishes "offline" with final counters.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import KnuteError
from gateway.message import iso_utc, status_topic
from gateway.spool import Row, Spool

log = logging.getLogger("knute.forwarder")


class ConnState(StrEnum):
    """The forwarder's link state."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class MqttConfig:
    """How to reach the broker; built by gateway.config from the [mqtt] TOML table."""

    host: str = "localhost"
    port: int = 1883
    client_id: str = ""                  # "" -> "knute-<gateway id>"
    protocol: str = "3.1.1"              # "3.1.1" or "5"
    username: str | None = None
    password: str | None = None
    tls: bool = False                    # also on when ca_file is set
    ca_file: str | None = None           # CA bundle to verify the broker
    cert_file: str | None = None         # client certificate (mutual TLS)
    key_file: str | None = None          # client key
    prefix: str = "knute"
    keepalive: int = 30
    max_inflight: int = 64
    qos: int = 1
    status_interval_s: float = 60.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.protocol not in ("3.1.1", "5"):
            raise KnuteError(f"mqtt protocol must be '3.1.1' or '5', not {self.protocol!r}")
        if self.qos != 1:
            raise KnuteError("mqtt qos must be 1 (at-least-once delivery from the spool)")
        if not 1 <= self.max_inflight <= 65535:
            raise KnuteError("mqtt max_inflight must be 1..65535")
        if (self.cert_file is None) != (self.key_file is None):
            raise KnuteError("mqtt cert_file and key_file go together")
        if (not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/")
                or any(c in self.prefix for c in "+#\0")):
            raise KnuteError(f"mqtt prefix {self.prefix!r} must be a topic without wildcards "
                             "and without a leading or trailing '/'")

    @property
    def use_tls(self) -> bool:
        """True when the connection is TLS."""
        return self.tls or self.ca_file is not None or self.cert_file is not None


class Backoff:
    """Capped exponential backoff with jitter: delay n in [d/2, d], d = min(max, min * 2^n)."""

    def __init__(self, min_s: float, max_s: float,
                 rng: Callable[[], float] = random.random) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.attempts = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The next delay, and count one more attempt."""
        ceiling: float = min(self.max_s, self.min_s * float(2 ** min(self.attempts, 30)))
        self.attempts += 1
        return float(ceiling / 2 + self._rng() * ceiling / 2)

    def reset(self) -> None:
        """Start again from the shortest delay (after a successful connection)."""
        self.attempts = 0


class _Session:
    """Per-connection state; paho's callbacks see it as userdata."""

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.connack: ReasonCode | None = None
        self.receive_max = 65535
        self.lost = False
        self.lost_reason = ""
        self.inflight: dict[int, int] = {}          # mid -> row id
        self.acked: list[int] = []                  # row ids acknowledged, delete pending
        self.failed = 0
        self.last_ack_at = time.monotonic()
        self.status_mid: int | None = None
        self.status_acked = False


class Forwarder:
    """Delivers spooled rows to MQTT; see the module docstring for the guarantees."""

    def __init__(self, spool: Spool, cfg: MqttConfig, *, gateway_id: str,
                 status_provider: Callable[[], dict[str, Any]],
                 stall_timeout_s: float | None = None, down_warn_s: float = 60.0,
                 fetch_batch: int = 512, ack_batch: int = 512,
                 ack_interval_s: float = 0.05) -> None:
        self.spool = spool
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.status_provider = status_provider
        self.client_id = cfg.client_id or f"knute-{gateway_id}"
        self.topic_status = status_topic(cfg.prefix, gateway_id)
        self.stall_timeout_s = (stall_timeout_s if stall_timeout_s is not None
                                else max(60.0, 3 * cfg.connect_timeout_s))
        self.down_warn_s = down_warn_s
        self.fetch_batch = fetch_batch
        self.ack_batch = ack_batch
        self.ack_interval_s = ack_interval_s
        self._state = ConnState.DISCONNECTED
        self._state_lock = threading.Lock()
        self._backoff = Backoff(cfg.backoff_min_s, cfg.backoff_max_s)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._halt = threading.Event()        # stop everything now
        self._stopping = False                # drain, then stop
        self._drain_deadline = 0.0
        self._gen = 0
        self._worker: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        self._down_since: float | None = time.monotonic()
        self._last_down_warn = time.monotonic()
        self.last_error = ""
        self.started_at = time.time()
        self._counts = collections.Counter({
            "forwarded_total": 0, "publish_errors": 0, "reconnects": 0, "connections": 0,
            "supervisor_restarts": 0, "stale_connections": 0,
        })
        self._inflight_now = 0

    # -- public API ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The link state, one of ConnState's values."""
        return self._state.value

    def stats(self) -> dict[str, int]:
        """forwarded_total, publish_errors, reconnects, connections, inflight, connected, ..."""
        out = dict(self._counts)
        out["inflight"] = self._inflight_now
        out["connected"] = 1 if self._state is ConnState.CONNECTED else 0
        return out

    def start(self) -> None:
        """Start the supervisor, which starts and watches the worker thread."""
        if self._supervisor is not None:
            return
        self._halt.clear()
        self._spawn_worker()
        self._supervisor = threading.Thread(target=self._supervise, name="mqtt-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def wake(self) -> None:
        """Tell the worker that new rows are in the spool (call after Spool.accept)."""
        with contextlib.suppress(OSError):  # already awake, or closed
            self._wake_w.send(b"\0")

    def stop(self, drain_timeout_s: float) -> None:
        """Deliver what is spooled for up to ``drain_timeout_s``, publish offline, stop.

        Rows not delivered by then stay in the spool for the next start.
        """
        self._drain_deadline = time.monotonic() + max(0.0, drain_timeout_s)
        self._stopping = True
        self._set_state(ConnState.STOPPING)
        self.wake()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=drain_timeout_s + self.cfg.connect_timeout_s + 5)
        self._halt.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        if worker is not None and worker.is_alive():
            worker.join(timeout=2)
        self._set_state(ConnState.STOPPED)
        self._wake_r.close()
        self._wake_w.close()

    # -- supervision --------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        self._gen += 1
        self._heartbeat = time.monotonic()
        worker = threading.Thread(target=self._run_worker, args=(self._gen,),
                                  name=f"mqtt-forwarder-{self._gen}", daemon=True)
        self._worker = worker
        worker.start()

    def _supervise(self) -> None:
        tick = min(1.0, self.stall_timeout_s / 4)
        while not self._halt.wait(tick):
            worker = self._worker
            now = time.monotonic()
            if self._stopping:
                if worker is None or not worker.is_alive():
                    return
                continue
            if worker is None or not worker.is_alive():
                log.error("mqtt forwarder thread died; starting a new one")
                self._counts["supervisor_restarts"] += 1
                self._set_state(ConnState.DISCONNECTED)
                self._spawn_worker()
            elif now - self._heartbeat > self.stall_timeout_s:
                log.error("mqtt forwarder thread stalled for %.0f s; starting a new one",
                          now - self._heartbeat)
                self._counts["supervisor_restarts"] += 1
                self._set_state(ConnState.DISCONNECTED)
                self._spawn_worker()
            if self._down_since is not None and now - self._last_down_warn >= self.down_warn_s:
                self._last_down_warn = now
                log.warning("mqtt %s:%d still not connected after %.0f s (state %s, "
                            "last error: %s); %d rows spooled", self.cfg.host, self.cfg.port,
                            now - self._down_since, self.state, self.last_error or "none",
                            self.spool.stats()["depth"])

    def _set_state(self, state: ConnState) -> None:
        with self._state_lock:
            if state is self._state:
                return
            self._state = state
            if state is ConnState.CONNECTED:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()
                self._last_down_warn = self._down_since
        log.info("mqtt %s:%d %s", self.cfg.host, self.cfg.port, state.value)

    def _alive(self, gen: int) -> bool:
        """Heartbeat; False when this worker generation should end."""
        if gen != self._gen:
            return False
        self._heartbeat = time.monotonic()
        return not self._halt.is_set()

    def _drain_over(self) -> bool:
        return self._stopping and time.monotonic() >= self._drain_deadline

    # -- worker -------------------------------------------------------------------------

    def _run_worker(self, gen: int) -> None:
        first = True
        while self._alive(gen):
            if self._drain_over():
                break
            if not first:
                self._counts["reconnects"] += 1
            first = False
            self._set_state(ConnState.CONNECTING)
            try:
                done = self._session(gen)
            except Exception as exc:  # a bug or an odd socket error: log, back off, retry
                log.exception("mqtt forwarder session failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                done = False
            if done or not self._alive(gen) or self._drain_over():
                break
            self._set_state(ConnState.BACKOFF)
            delay = self._backoff.next_delay()
            log.info("mqtt reconnecting in %.1f s", delay)
            until = time.monotonic() + delay
            while self._alive(gen) and not self._drain_over():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._halt.wait(min(left, 0.5))
        if gen == self._gen:
            self._set_state(ConnState.STOPPED if self._stopping else ConnState.DISCONNECTED)

    def _make_client(self, sess: _Session) -> mqtt.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True, userdata=sess)
        client.max_inflight_messages_set(cfg.max_inflight + 16)
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(self.topic_status, self._offline_will(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _session(self, gen: int) -> bool:
        """One connection; returns True when stopping is complete."""
        sess = _Session(gen)
        cfg = self.cfg
        try:
            # tls_set reads the CA, certificate and key files: a bad file is one
            # warning line per attempt, like a refused connection, not a traceback.
            client = self._make_client(sess)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"tls: {exc}"
            log.warning("mqtt %s:%d: cannot set up TLS with [mqtt.tls] ca/cert/key: %s",
                        cfg.host, cfg.port, exc)
            return False
        try:
            if cfg.protocol == "5":
                client.connect(cfg.host, cfg.port, cfg.keepalive, clean_start=True)
            else:
                client.connect(cfg.host, cfg.port, cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"connect: {exc}"
            log.warning("mqtt connect to %s:%d failed: %s", cfg.host, cfg.port, exc)
            return False
        try:
            return self._connected_session(gen, sess, client)
        finally:
            self._inflight_now = 0
            self._commit_acks(sess)
            with contextlib.suppress(Exception):  # the socket may already be gone
                client.disconnect()
            with contextlib.suppress(Exception):
                sock = client.socket()
                if sock is not None:
                    sock.close()

    def _connected_session(self, gen: int, sess: _Session, client: mqtt.Client) -> bool:
        cfg = self.cfg
        deadline = time.monotonic() + cfg.connect_timeout_s
        while sess.connack is None:
            if not self._alive(gen) or sess.lost or time.monotonic() > deadline:
                break
            if not self._io(client, 0.1):
                break
        if sess.connack is None:
            if sess.lost:
                self.last_error = ("connection closed before CONNACK (TLS client certificate "
                                   f"or protocol refused?): {sess.lost_reason}")
            else:
                self.last_error = f"no CONNACK within {cfg.connect_timeout_s:g} s"
            log.warning("mqtt %s:%d: %s", cfg.host, cfg.port, self.last_error)
            return False
        if sess.connack.is_failure:
            self.last_error = f"broker refused the connection: {sess.connack}"
            log.error("mqtt %s:%d refused the connection: %s", cfg.host, cfg.port,
                      sess.connack)
            return False
        self._counts["connections"] += 1
        self._backoff.reset()
        self.last_error = ""
        self._set_state(ConnState.CONNECTED)
        window = max(1, min(cfg.max_inflight, sess.receive_max))
        self._publish_status(client, sess)
        next_status = time.monotonic() + cfg.status_interval_s
        buffer: collections.deque[Row] = collections.deque()
        cursor = 0                 # highest row id fetched in this session
        first_ack_pending = 0.0    # when the oldest uncommitted PUBACK arrived
        spool_empty = False        # the last fetch found nothing; wait for a wake-up
        recheck_at = 0.0           # ... or look again at this time anyway
        while True:
            if not self._alive(gen):
                return False
            now = time.monotonic()
            if spool_empty and now >= recheck_at:
                spool_empty = False
            # Fill the in-flight window in spool order.
            while len(sess.inflight) < window:
                if not buffer:
                    if spool_empty:
                        break
                    rows = self.spool.pending(self.fetch_batch, cursor)
                    if not rows:
                        spool_empty = True
                        recheck_at = now + 1.0
                        break
                    cursor = rows[-1].row_id
                    buffer.extend(rows)
                row = buffer.popleft()
                if not sess.inflight:
                    sess.last_ack_at = now
                # A device's condition (online/offline) is state, not an event:
                # retained, so a consumer that subscribes later still sees it.
                info = client.publish(row.topic, row.payload, qos=cfg.qos,
                                      retain=row.topic.endswith("/condition"))
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.last_error = f"publish: {mqtt.error_string(info.rc)}"
                    return False
                sess.inflight[info.mid] = row.row_id
            self._inflight_now = len(sess.inflight)
            # Stopping: done once everything is delivered, or at the deadline.
            if self._stopping:
                drained = (not buffer and not sess.inflight
                           and not self.spool.pending(1, cursor))
                if drained or self._drain_over():
                    self._commit_acks(sess)
                    self._publish_offline(client, sess)
                    return True
            timeout = min(0.5, max(0.0, next_status - now))
            if sess.acked:
                timeout = min(timeout, self.ack_interval_s)
            woken = [False]
            if not self._io(client, timeout, woken):
                return False
            if woken[0]:
                spool_empty = False
            if sess.failed:
                self._counts["publish_errors"] += sess.failed
                self.last_error = "PUBACK with an error reason code"
                return False
            now = time.monotonic()
            if sess.acked:
                if not first_ack_pending:
                    first_ack_pending = now
                if (len(sess.acked) >= self.ack_batch or not sess.inflight
                        or now - first_ack_pending >= self.ack_interval_s):
                    self._commit_acks(sess)
                    first_ack_pending = 0.0
            if sess.inflight and now - sess.last_ack_at > cfg.ack_timeout_s:
                self._counts["stale_connections"] += 1
                self.last_error = (f"no PUBACK for {cfg.ack_timeout_s:.0f} s with "
                                   f"{len(sess.inflight)} in flight")
                log.warning("mqtt %s:%d: %s; reconnecting", cfg.host, cfg.port,
                            self.last_error)
                return False
            if now >= next_status:
                self._publish_status(client, sess)
                next_status = now + cfg.status_interval_s

    def _io(self, client: mqtt.Client, timeout: float, woken: list[bool] | None = None) -> bool:
        """One select round on the client's socket and the wake-up socket."""
        sock = client.socket()
        if sock is None:
            return False
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        if pending:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, self._wake_r], wlist, [], timeout)
        except (OSError, ValueError):
            return False
        if ((sock in readable or pending)
                and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS):
            return False
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            if woken is not None:
                woken[0] = True
        if (writable and client.socket() is not None
                and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS):
            return False
        if client.socket() is None:
            return False
        return client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _commit_acks(self, sess: _Session) -> None:
        if not sess.acked:
            return
        ids, sess.acked = sess.acked, []
        self.spool.ack(ids)
        self._counts["forwarded_total"] += len(ids)

    # -- paho callbacks (run in the worker thread, inside loop_read) ---------------------

    def _on_connect(self, client: mqtt.Client, sess: _Session, flags: Any,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        sess.connack = reason_code
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if isinstance(receive_max, int) and receive_max > 0:
            sess.receive_max = receive_max

    def _on_disconnect(self, client: mqtt.Client, sess: _Session, flags: Any,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        sess.lost = True
        sess.lost_reason = f"disconnected: {reason_code}"
        if sess.connack is not None and not sess.connack.is_failure and not self._stopping:
            log.warning("mqtt %s:%d connection lost: %s", self.cfg.host, self.cfg.port,
                        reason_code)

    def _on_publish(self, client: mqtt.Client, sess: _Session, mid: int,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        # Message ids are 16 bits and wrap: a row's mid may equal an old status mid,
        # so rows in flight are looked up first.
        row_id = sess.inflight.pop(mid, None)
        if row_id is None:
            if mid == sess.status_mid:
                sess.status_mid = None
                sess.status_acked = True
            return
        if reason_code.is_failure:
            sess.failed += 1
            log.warning("mqtt PUBACK for row %d: %s; will retry", row_id, reason_code)
            return
        sess.acked.append(row_id)
        sess.last_ack_at = time.monotonic()

    # -- status -------------------------------------------------------------------------

    def _offline_will(self) -> bytes:
        return json.dumps({"gateway": self.gateway_id, "status": "offline",
                           "reason": "connection lost"}, separators=(",", ":")).encode()

    def status_document(self, online: bool, reason: str | None = None) -> dict[str, Any]:
        """The status JSON as a dict: state, time, counters, spool and forwarder figures."""
        counters: dict[str, Any] = {}
        try:
            provided = self.status_provider()
            if provided:
                counters.update(provided)
        except Exception:  # a broken provider must not stop delivery
            log.exception("status provider failed")
        spool = self.spool.stats()
        counters["spooled"] = spool["accepted_total"]
        counters["evicted"] = spool["evicted_total"]
        counters["forwarded"] = self._counts["forwarded_total"]
        doc: dict[str, Any] = {
            "gateway": self.gateway_id,
            "status": "online" if online else "offline",
            "at": iso_utc(time.time()),
            "since": iso_utc(self.started_at),
            "counters": counters,
            "spool": {k: spool[k] for k in ("depth", "bytes", "max_bytes", "oldest_age_s",
                                            "evicted_size_routine", "evicted_size_alarm",
                                            "evicted_age_routine", "evicted_age_alarm")},
            "forwarder": {k: v for k, v in self.stats().items()},
        }
        if reason:
            doc["reason"] = reason
        return doc

    def _publish_status(self, client: mqtt.Client, sess: _Session) -> None:
        payload = json.dumps(self.status_document(True), separators=(",", ":")).encode()
        info = client.publish(self.topic_status, payload, qos=1, retain=True)
        sess.status_mid = info.mid

    def _publish_offline(self, client: mqtt.Client, sess: _Session) -> None:
        """Publish the retained offline status and wait briefly for its PUBACK."""
        payload = json.dumps(self.status_document(False, "shutdown"),
                             separators=(",", ":")).encode()
        info = client.publish(self.topic_status, payload, qos=1, retain=True)
        sess.status_mid = info.mid
        sess.status_acked = False
        deadline = time.monotonic() + 2.0
        while not sess.status_acked and time.monotonic() < deadline:
            if not self._io(client, 0.05):
                break
            self._commit_acks(sess)

"""The forwarder: spool rows to the MQTT broker with QoS 1, deleted only on PUBACK.

This is the I/O shell: paho-mqtt, sockets, threads and the spool. What to
send, what is acknowledged, what is stale and what to park is decided by the
pure objects of gateway.delivery (``DeliveryWindow``, ``LossTracker``).

Design
------
- One worker thread (``knute-forwarder-worker-<n>``) drives paho-mqtt 2.x as an
  external event loop (``select`` on the client's socket plus a wake-up
  socket, then ``loop_read``/``loop_write``/``loop_misc``), so nothing else in
  the process shares paho's state. The client is gateway.mqttclient's: paho's
  own for the connection, keepalive, TLS and the status messages, while the
  rows of one loop step are built into one buffer and sent with one system
  call (``publish_rows``) and their plain PUBACKs are read in bulk
  (``on_rows_acked``), without paho's per-message objects.
- Each connection is a NEW paho client with a clean session and a new
  ``DeliveryWindow``: at every (re)connect the worker starts again from the
  oldest row still in the spool. A row leaves the spool only when its PUBACK
  arrives with a success reason code, or when it is parked (below).
- At most ``max_inflight`` rows are published and not yet acknowledged
  (MQTT 5: also at most the broker's Receive Maximum). Rows go out in spool
  order, which is per-device frame-counter order; a broker processes the
  PUBLISHes of one connection in order. After a reconnect the unacknowledged
  rows are sent again, in order, so a consumer may see a duplicate of a
  reading (same ``id``) but never a device's readings out of order.
- A message the broker refuses never blocks the rest: it is parked
  (``Spool.park``: moved out of the queue with its reason, counted in
  ``parked``), logged once, and delivery goes on. Refused means: an MQTT 5
  PUBACK with an error reason code other than "not now" (Quota exceeded,
  Packet Identifier in use: those force a reconnect and a resend); a row
  larger than the Maximum Packet Size of the broker's MQTT 5 CONNACK (parked
  unsent); or, since an MQTT 3.1.1 broker can only drop the connection, the
  connection lost ``park_after_losses`` times in a row with the same row
  oldest in flight and nothing after it acknowledged (see gateway.delivery).
  Only a connection on which the broker acknowledged the status counts: one
  lost before that is a broker failing over, not a refusal. While a row is
  the suspect it is sent alone and only after the status PUBACK, so the
  loss that convicts it follows a PUBACK that the reset cannot have hidden
  (no status PUBACK within ``ack_timeout_s``: the connection is stale).
- Acknowledged rows are deleted in batches (``ack_batch`` rows or
  ``ack_interval_s``, whichever first, or at once when nothing is queued or in
  flight) and always before a reconnect.
- Reconnects use gateway.link's capped exponential backoff with jitter
  (``backoff_min_s`` doubling up to ``backoff_max_s``), but at most
  ``BROKER_DOWN_RETRY_MAX_S`` while the broker's host refuses or resets the
  connection (a broker restart), so the gateway is back online within seconds.
- A supervisor thread (``knute-forwarder-supervisor``) watches the worker: a
  worker thread that died is restarted, one whose heartbeat is older than
  ``stall_timeout_s`` is abandoned and replaced (it exits when it wakes up),
  and while the link is down a warning is logged every ``down_warn_s``. A
  connection whose in-flight messages get no PUBACK for ``ack_timeout_s`` is
  dropped and re-established; paho's keepalive catches a silent broker.
- Several brokers (``[mqtt] brokers``): a connection attempt that fails moves
  to the next broker of the list at once; only a whole round of failures backs
  off (and sets ``all_brokers_down`` in the status until a broker answers). A
  connection that was open and is lost tries the same broker once more first.
  With ``failback = "primary"`` a connection to a later broker checks every
  ``failback_check_s`` whether the first one accepts an MQTT connection again
  (``broker_answers``); if so it stops taking new rows, waits until nothing is
  in flight and moves back.
  Every move is a new session from the oldest spooled row, so the delivery
  guarantees above hold across brokers: nothing is deleted without a PUBACK from
  the broker it was sent to, and a row sent twice (to two brokers) has the same
  id. Order holds through each broker only: a row the old broker acknowledged
  may reach a backend subscribed to both after newer rows through the new one
  (docs/mqtt.md).
- Status: ``<prefix>/gateway/<id>/status``, retained, QoS 1: "online" with
  counters as the first PUBLISH of every connection (before any row, so a
  broker restart that published the will is corrected at once) and every
  ``status_interval_s``; the will (LWT) is "offline"; a clean stop publishes
  "offline" with final counters.

Why one module of ~800 lines: it is one state machine, a connection's life
(connect, CONNACK, publish window, PUBACKs, loss, reconnect) driven by one
worker thread and watched by one supervisor, and every method reads or moves
the same session. The decisions are already outside it (gateway.delivery,
gateway.link); what is left is the I/O around them, which reads best whole.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from knute.gateway.config import MqttConfig as MqttConfig  # re-exported for the tools
from knute.gateway.delivery import RETRY_REASON_CODES, DeliveryWindow, LossTracker, Refusal
from knute.gateway.link import Backoff, LinkState
from knute.gateway.message import iso_utc, status_topic
from knute.gateway.mqttclient import ForwarderClient, make_client
from knute.gateway.spool import Spool

log = logging.getLogger("knute.forwarder")

THREAD_PREFIX = "knute-forwarder"
# A host that refuses or resets the TCP connection (or, without TLS, closes it before
# CONNACK: a proxy or load balancer in front of a broker that is not there) is up
# while its broker is not: a broker restart. Try again at least this often, so the
# gateway's "online" replaces the will the broker published on its way down within
# seconds of its return, even after a long outage (backoff_max_s is for a network or
# host that does not answer, and for refusals that retrying will not cure).
BROKER_DOWN_RETRY_MAX_S = 2.0


def broker_answers(cfg: MqttConfig, host: str, port: int, client_id: str,
                   timeout_s: float = 2.0) -> bool:
    """True when the broker at host:port accepts an MQTT 3.1.1 CONNECT (CONNACK 0).

    The failback probe: a TCP port that accepts (a proxy, a load balancer, a
    relay in front of a broker that is down) is not enough. Clean session, no
    will, DISCONNECT at once; TLS and username/password as configured.
    """
    def utf8(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    flags = 0x02
    payload = utf8(client_id)
    if cfg.username is not None:
        flags |= 0x80
        payload += utf8(cfg.username)
        if cfg.password is not None:
            flags |= 0x40
            payload += utf8(cfg.password)
    body = utf8("MQTT") + bytes((4, flags)) + (10).to_bytes(2, "big") + payload
    if len(body) > 127:
        return False                  # one-byte remaining length is all a probe needs
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return False
    sock: socket.socket = raw
    try:
        raw.settimeout(timeout_s)
        if cfg.tls is not None:
            ctx = ssl.create_default_context(cafile=cfg.tls.ca)
            if cfg.tls.cert is not None:
                ctx.load_cert_chain(cfg.tls.cert, cfg.tls.key)
            sock = ctx.wrap_socket(raw, server_hostname=host)
        sock.sendall(bytes((0x10, len(body))) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                return False
            connack += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")
        return connack[0] == 0x20 and connack[3] == 0
    except (OSError, ssl.SSLError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        with contextlib.suppress(OSError):
            raw.close()


class _Session:
    """Per-connection state; paho's callbacks see it as userdata."""

    def __init__(self, window: DeliveryWindow) -> None:
        self.window = window
        self.connack: ReasonCode | None = None
        self.receive_max = 65535
        self.max_packet: int | None = None
        self.lost = False
        self.lost_reason = ""
        self.status_mid: int | None = None
        # The broker acknowledged the status on this connection: it was taking messages
        # (gateway.delivery.LossTracker). Only the offline status at a stop resets it.
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
        self._state = LinkState.CLOSED
        self._state_lock = threading.Lock()
        self._backoff = Backoff(cfg.backoff_min_s, cfg.backoff_max_s)
        self._broker_down = False             # the host answered, its broker did not
        self._losses = LossTracker(cfg.park_after_losses)
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
            "supervisor_restarts": 0, "stale_connections": 0, "parked_total": 0,
        })
        self._inflight_now = 0
        self._brokers = cfg.broker_list
        self._index = 0                       # the broker tried or connected now
        self._failed_in_row = 0               # connection attempts failed since the last open
        self._all_down = False                # a whole round of the list failed
        self._switch_to: int | None = None    # failback: end this session, go there
        self._broker_errors = ["" for _ in self._brokers]
        self._counts["failovers"] = 0
        self._state_was_open = False
        self._counts["failbacks"] = 0

    # -- public API ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The link state, one of gateway.link.LinkState's values."""
        return self._state.value

    def stats(self) -> dict[str, int]:
        """forwarded_total, publish_errors, parked_total, reconnects, inflight, connected..."""
        out = dict(self._counts)
        out["inflight"] = self._inflight_now
        out["connected"] = 1 if self._state is LinkState.OPEN else 0
        out["broker_index"] = self._index
        out["all_brokers_down"] = 1 if self._all_down else 0
        return out

    @property
    def broker(self) -> str:
        """The broker tried or connected now, as ``host:port``."""
        host, port = self._brokers[self._index]
        return f"{host}:{port}"

    def brokers_status(self) -> list[dict[str, Any]]:
        """Each configured broker: its address, whether it is the current one, its last error."""
        return [{"broker": f"{h}:{p}", "current": i == self._index,
                 "last_error": self._broker_errors[i]}
                for i, (h, p) in enumerate(self._brokers)]

    def start(self) -> None:
        """Start the supervisor, which starts and watches the worker thread."""
        if self._supervisor is not None:
            return
        self._halt.clear()
        self._spawn_worker()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"{THREAD_PREFIX}-supervisor")
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
        self._set_state(LinkState.STOPPING)
        self.wake()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=drain_timeout_s + self.cfg.connect_timeout_s + 5)
        self._halt.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        if worker is not None and worker.is_alive():
            worker.join(timeout=2)
        self._set_state(LinkState.STOPPED)
        self._wake_r.close()
        self._wake_w.close()

    # -- supervision --------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        self._gen += 1
        self._heartbeat = time.monotonic()
        worker = threading.Thread(target=self._run_worker, args=(self._gen,), daemon=True,
                                  name=f"{THREAD_PREFIX}-worker-{self._gen}")
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
            dead = worker is None or not worker.is_alive()
            if dead or now - self._heartbeat > self.stall_timeout_s:
                if dead:
                    log.error("mqtt forwarder thread died; starting a new one")
                else:
                    log.error("mqtt forwarder thread stalled for %.0f s; starting a new one",
                              now - self._heartbeat)
                self._counts["supervisor_restarts"] += 1
                self._set_state(LinkState.CLOSED)
                self._spawn_worker()
            if self._down_since is not None and now - self._last_down_warn >= self.down_warn_s:
                self._last_down_warn = now
                log.warning("mqtt %s:%d still not connected after %.0f s (state %s, "
                            "last error: %s); %d rows spooled", *self._brokers[self._index],
                            now - self._down_since, self.state, self.last_error or "none",
                            self.spool.stats()["depth"])

    def _set_state(self, state: LinkState) -> None:
        with self._state_lock:
            if state is self._state:
                return
            self._state = state
            if state is LinkState.OPEN:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()
                self._last_down_warn = self._down_since
        log.info("mqtt %s:%d %s", *self._brokers[self._index], state.value)

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
            self._set_state(LinkState.OPENING)
            try:
                done = self._session(gen)
            except Exception as exc:  # a bug or an odd socket error: log, back off, retry
                log.exception("mqtt forwarder session failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                done = False
            if done or not self._alive(gen) or self._drain_over():
                break
            if self._switch_to is not None:          # failback: straight to the other broker
                self._index, self._switch_to = self._switch_to, None
                self._counts["failbacks"] += 1
                continue
            if not self._next_broker():
                continue                             # the next broker of the list, at once
            self._set_state(LinkState.BACKOFF)
            delay = (self._backoff.next_capped(BROKER_DOWN_RETRY_MAX_S) if self._broker_down
                     else self._backoff.next())
            log.info("mqtt reconnecting in %.1f s", delay)
            until = time.monotonic() + delay
            while self._alive(gen) and not self._drain_over():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._halt.wait(min(left, 0.5))
        if gen == self._gen:
            self._set_state(LinkState.STOPPED if self._stopping else LinkState.CLOSED)

    def _next_broker(self) -> bool:
        """After a failed session: move along the list; True when it is time to back off.

        A session that had been open (``_failed_in_row`` 0 after it) retries its own
        broker once; a failed attempt moves to the next broker; a whole round of
        failures backs off and marks every broker down.
        """
        self._broker_errors[self._index] = self.last_error
        if self._failed_in_row == 0 and self._state_was_open:
            self._state_was_open = False
            self._failed_in_row = 0
            return True
        self._failed_in_row += 1
        if len(self._brokers) > 1:
            self._index = (self._index + 1) % len(self._brokers)
            self._counts["failovers"] += 1
            log.warning("mqtt: moving to broker %s (%d of %d)", self.broker, self._index + 1,
                        len(self._brokers))
        if self._failed_in_row >= len(self._brokers):
            if not self._all_down:
                log.error("mqtt: every broker is down (%s); the spool keeps the readings",
                          ", ".join(f"{h}:{p}" for h, p in self._brokers))
            self._all_down = True
            self._failed_in_row = 0
            return True
        return False

    def _failback_due(self) -> bool:
        """Whether the first broker accepts an MQTT connection again (policy "primary")."""
        if self.cfg.failback != "primary" or self._index == 0:
            return False
        host, port = self._brokers[0]
        if not broker_answers(self.cfg, host, port, f"{self.client_id}-probe"):
            return False
        log.info("mqtt: broker %s:%d is back; moving to it once nothing is in flight",
                 host, port)
        return True

    def _make_client(self, sess: _Session) -> mqtt.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = make_client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True, userdata=sess)
        client.max_inflight_messages_set(cfg.max_inflight + 16)
        client.connect_timeout = cfg.connect_timeout_s
        cfg.configure_client(client)
        client.will_set(self.topic_status, self._offline_will(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if isinstance(client, ForwarderClient):
            window = sess.window
            client.on_rows_acked = lambda mids: window.on_pubacks(mids, time.monotonic())
        return client

    def _session(self, gen: int) -> bool:
        """One connection; returns True when stopping is complete."""
        cfg = self.cfg
        window = DeliveryWindow(self._losses.window_limit(cfg.max_inflight),
                                ack_timeout_s=cfg.ack_timeout_s, now=time.monotonic(),
                                v5=cfg.protocol == "5")
        sess = _Session(window)
        try:
            # tls_set reads the CA, certificate and key files: a bad file is one
            # warning line per attempt, like a refused connection, not a traceback.
            client = self._make_client(sess)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"tls: {exc}"
            log.warning("mqtt %s:%d: cannot set up TLS with [mqtt.tls] ca/cert/key: %s",
                        *self._brokers[self._index], exc)
            return False
        try:
            if cfg.protocol == "5":
                client.connect(*self._brokers[self._index], cfg.keepalive, clean_start=True)
            else:
                client.connect(*self._brokers[self._index], cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._broker_down = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
            self.last_error = f"connect: {exc}"
            log.warning("mqtt connect to %s:%d failed: %s", *self._brokers[self._index], exc)
            return False
        self._broker_down = False
        try:
            return self._connected_session(gen, sess, client)
        finally:
            self._inflight_now = 0
            try:
                self._settle(window)
                if sess.lost and not self._stopping:   # the broker (or the network) hung up
                    refusal = self._losses.connection_ended(
                        window.oldest_in_flight(), window.newest_acked,
                        broker_took_messages=sess.status_acked or window.newest_acked > 0)
                    if refusal is not None:
                        self._park([refusal])
            finally:   # a spool error above must not leave the socket open
                with contextlib.suppress(Exception):  # the socket may already be gone
                    client.disconnect()
                with contextlib.suppress(Exception):
                    sock = client.socket()
                    if sock is not None:
                        sock.close()

    def _await_connack(self, gen: int, sess: _Session, client: mqtt.Client) -> bool:
        """Wait for CONNACK; True when the broker accepted the connection."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.connect_timeout_s
        while sess.connack is None:
            if not self._alive(gen) or sess.lost or time.monotonic() > deadline:
                break
            if not self._io(client, 0.1):
                break
        if sess.connack is None:
            if sess.lost:
                # With TLS this is also how a refused client certificate looks.
                self._broker_down = not cfg.use_tls
                self.last_error = ("connection closed before CONNACK (TLS client certificate "
                                   f"or protocol refused?): {sess.lost_reason}")
            else:
                self.last_error = f"no CONNACK within {cfg.connect_timeout_s:g} s"
            log.warning("mqtt %s:%d: %s", *self._brokers[self._index], self.last_error)
            return False
        if sess.connack.is_failure:
            self.last_error = f"broker refused the connection: {sess.connack}"
            log.error("mqtt %s:%d refused the connection: %s", *self._brokers[self._index],
                      sess.connack)
            return False
        return True

    def _connected_session(self, gen: int, sess: _Session, client: mqtt.Client) -> bool:
        if not self._await_connack(gen, sess, client):
            return False
        cfg = self.cfg
        window = sess.window
        self._all_down = False
        # First of all, correct a will the broker may have published while we were away.
        self._publish_status(client, sess)
        self._counts["connections"] += 1
        self._backoff.reset()
        self.last_error = ""
        self._broker_errors[self._index] = ""
        self._failed_in_row = 0
        self._state_was_open = True
        self._set_state(LinkState.OPEN)
        window.limit = max(1, min(window.limit, sess.receive_max))
        window.max_packet = sess.max_packet
        next_status = time.monotonic() + cfg.status_interval_s
        first_ack_pending = 0.0    # when the oldest uncommitted PUBACK arrived
        spool_empty = False        # the last fetch found nothing; wait for a wake-up
        recheck_at = 0.0           # ... or look again at this time anyway
        next_failback = time.monotonic() + cfg.failback_check_s
        leaving = False            # failback: take no new rows, go once nothing is in flight
        hold_writes = getattr(client, "hold_writes", None)
        release_writes = getattr(client, "release_writes", None)
        publish_rows = client.publish_rows if isinstance(client, ForwarderClient) else None
        # Testing a suspect (gateway.delivery.LossTracker): no row before the broker
        # acknowledged the status, so a loss after the suspect went out is a loss on
        # a connection that took messages, and one before it counts for nothing.
        testing = self._losses.suspect is not None
        status_due_by = time.monotonic() + cfg.ack_timeout_s
        while True:
            if not self._alive(gen):
                return False
            now = time.monotonic()
            if spool_empty and now >= recheck_at:
                spool_empty = False
            if leaving and window.idle:
                self._settle(window)
                self._switch_to = 0
                self.last_error = "failing back to the first broker"
                return False
            held = testing and not sess.status_acked
            if held and now > status_due_by:
                self._counts["stale_connections"] += 1
                self.last_error = (f"no PUBACK for the status within {cfg.ack_timeout_s:.0f} s "
                                   "while a suspect row waits")
                log.warning("mqtt %s:%d: %s; reconnecting", *self._brokers[self._index],
                            self.last_error)
                return False
            if (not leaving and not held and not window.queued and not spool_empty
                    and window.in_flight < window.limit):
                rows = self.spool.pending(self.fetch_batch, window.cursor)
                window.offer(rows)
                if not rows:
                    spool_empty, recheck_at = True, now + 1.0
            due = [] if held else window.due()
            if due and publish_rows is not None:
                # built and sent in one go, PUBACKs read in bulk (gateway.mqttclient)
                rc, mids = publish_rows(due)
                for row, mid in zip(due, mids, strict=False):   # none: no connection
                    window.sent(row, mid, now)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.last_error = f"publish: {mqtt.error_string(rc)}"
                    return False
            elif due:
                # the PUBLISHes of this step leave in one send (gateway.mqttclient)
                if hold_writes is not None:
                    hold_writes()
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                for row in due:
                    info = client.publish(row.topic, row.payload, qos=cfg.qos,
                                          retain=row.retain)
                    rc = info.rc
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    window.sent(row, info.mid, now)
                if release_writes is not None:
                    released = release_writes()
                    rc = rc or released
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.last_error = f"publish: {mqtt.error_string(rc)}"
                    return False
            self._inflight_now = window.in_flight
            self._park(window.take_refused())
            if self._stopping:   # done once everything is delivered, or at the deadline
                drained = window.idle and not self.spool.pending(1, window.cursor)
                if drained or self._drain_over():
                    self._settle(window)
                    self._publish_offline(client, sess)
                    return True
            timeout = min(0.5, max(0.0, next_status - now))
            if window.acked_waiting:
                timeout = min(timeout, self.ack_interval_s)
            woken = [False]
            if not self._io(client, timeout, woken):
                return False
            if woken[0]:
                spool_empty = False
            if window.failed:
                self.last_error = "PUBACK with a reason code to retry later"
                return False
            now = time.monotonic()
            if window.acked_waiting:
                if not first_ack_pending:
                    first_ack_pending = now
                # Every delete is a transaction: while a backlog drains (rows queued or in
                # flight) take them in batches; once the window is idle, at once.
                if (window.acked_waiting >= self.ack_batch or window.idle
                        or now - first_ack_pending >= self.ack_interval_s):
                    self._settle(window)
                    first_ack_pending = 0.0
            if window.stale(now):
                self._counts["stale_connections"] += 1
                self.last_error = (f"no PUBACK for {cfg.ack_timeout_s:.0f} s with "
                                   f"{window.in_flight} in flight")
                log.warning("mqtt %s:%d: %s; reconnecting", *self._brokers[self._index],
                            self.last_error)
                return False
            if now >= next_status:
                self._publish_status(client, sess)
                next_status = now + cfg.status_interval_s
            if not leaving and not self._stopping and now >= next_failback:
                leaving = self._failback_due()
                next_failback = time.monotonic() + cfg.failback_check_s

    def _io(self, client: mqtt.Client, timeout: float, woken: list[bool] | None = None) -> bool:
        """One select round on the client's socket and the wake-up socket."""
        sock = client.socket()
        if sock is None:
            return False
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        # bytes the client read ahead (gateway.mqttclient) are not in the socket any more
        pending = pending or getattr(client, "buffered", 0)
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

    def _settle(self, window: DeliveryWindow) -> None:
        """Delete acknowledged rows and park refused ones."""
        ids = window.take_acked()
        if ids:
            self.spool.ack(ids)
            self._counts["forwarded_total"] += len(ids)
        self._park(window.take_refused())

    def _park(self, refusals: list[Refusal]) -> None:
        """Move refused rows out of the queue, with their reason; count and log each once."""
        by_reason: dict[str, list[int]] = {}
        for row, reason in refusals:
            by_reason.setdefault(reason, []).append(row.row_id)
            log.error("mqtt %s:%d refused row %d (%s, %d bytes on %s): %s; parked",
                      *self._brokers[self._index], row.row_id, row.kind,
                      len(row.payload), row.topic, reason)
        for reason, ids in by_reason.items():
            self.spool.park(ids, reason)
            self._counts["parked_total"] += len(ids)

    # -- paho callbacks (run in the worker thread, inside loop_read) ---------------------

    def _on_connect(self, client: mqtt.Client, sess: _Session, flags: Any,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        sess.connack = reason_code
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if isinstance(receive_max, int) and receive_max > 0:
            sess.receive_max = receive_max
        max_packet = getattr(properties, "MaximumPacketSize", None) if properties else None
        if isinstance(max_packet, int) and max_packet > 0:
            sess.max_packet = max_packet

    def _on_disconnect(self, client: mqtt.Client, sess: _Session, flags: Any,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        sess.lost = True
        sess.lost_reason = f"disconnected: {reason_code}"
        if sess.connack is not None and not sess.connack.is_failure and not self._stopping:
            log.warning("mqtt %s:%d connection lost: %s", *self._brokers[self._index],
                        reason_code)

    def _on_publish(self, client: mqtt.Client, sess: _Session, mid: int,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        # Message ids are 16 bits and wrap: a row's mid may equal an old status mid,
        # so rows in flight are looked up first.
        failed = reason_code.is_failure
        if failed:
            self._counts["publish_errors"] += 1
        retry = failed and reason_code.value in RETRY_REASON_CODES
        refused = (f"the broker refused it: {reason_code} (MQTT 5 reason code "
                   f"0x{reason_code.value:02x})") if failed and not retry else None
        row = sess.window.on_puback(mid, refused=refused, retry=retry, now=time.monotonic())
        if row is None:
            if mid == sess.status_mid:
                sess.status_mid = None
                sess.status_acked = True
        elif retry:
            log.warning("mqtt PUBACK for row %d: %s; will retry", row.row_id, reason_code)

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
        counters["parked"] = spool.get("parked", 0)
        doc: dict[str, Any] = {
            "gateway": self.gateway_id,
            "status": "online" if online else "offline",
            "at": iso_utc(time.time()),
            "since": iso_utc(self.started_at),
            "counters": counters,
            "spool": {k: spool[k] for k in ("depth", "bytes", "max_bytes", "oldest_age_s",
                                            "evicted_size_routine", "evicted_size_alarm",
                                            "evicted_age_routine", "evicted_age_alarm",
                                            "parked") if k in spool},
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
            self._settle(sess.window)

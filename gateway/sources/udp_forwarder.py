"""A Semtech UDP packet-forwarder source (the server side of the protocol).

Any LoRa concentrator running Semtech's packet forwarder (or a compatible
one) sends to this listener; the datagrams, and the reasons every fault is
counted under, are in gateway.sources.semtech_udp.

A downlink (``transmit_downlink``) goes to the address the concentrator's last
PULL_DATA came from, as a PULL_RESP whose ``txpk`` is timed on the
concentrator's microsecond counter: the uplink's ``tmst`` plus the receive
window's delay (``imme`` false), with ``ipol`` true as downlinks are sent with
inverted polarity. The TX_ACK that echoes its token reports the outcome; an
error other than ``NONE`` (TOO_LATE, TOO_EARLY, COLLISION_PACKET,
COLLISION_BEACON, TX_FREQ, TX_POWER, GPS_UNLOCKED, ...) is counted as
``tx_ack_<error>`` and the commands go back to the queue.

Well-formed PUSH_DATA and PULL_DATA headers are acknowledged at once, before
their content is looked at, as the protocol asks. ``stat`` objects (gateway
status) are counted and logged at debug level. Nothing from a datagram reaches
the log unsanitised, and every remote-triggered line is rate-limited and
aggregated (``gateway.logsafe``).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import random
import re
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from knute.gateway.config import UdpSourceConfig
from knute.gateway.logsafe import EventLog, clean
from knute.gateway.model import Counters
from knute.gateway.pipeline import Reception
from knute.gateway.sources.base import LinkState, Sink, ThreadedSource
from knute.gateway.sources.buckets import Buckets, TokenBucket
from knute.gateway.sources.semtech_udp import (
    PF_GATEWAY,
    PF_JSON,
    PF_RATE,
    PROTOCOL_VERSION,
    PULL_DATA,
    PULL_RESP,
    PUSH_DATA,
    TX_ACK,
    Datagram,
    ack_for,
    parse_datagram,
    parse_push,
    parse_rxpk,
)
from knute.protocol.errors import FrameError

log = logging.getLogger("knute.source.udp")


class UdpForwarderSource(ThreadedSource):
    """Listens for packet forwarders on one UDP port and answers their datagrams.

    Everything a remote sender can grow is bounded: the gateways heard
    (``MAX_GATEWAYS``, least recently heard pushed out and counted), the
    token buckets, the trusted pairs, the log (``gateway.logsafe``) and the
    status entry (the ``STATUS_GATEWAYS`` gateways heard last, plus totals).

    Under a flood the gateway sheds the flood rather than its concentrators'
    traffic, cheapest check first, all before a datagram's bytes are copied:

    1. each source address may send ``PEER_RATE`` datagrams a second;
    2. an (address, gateway EUI) pair that brought a frame which then passed
       the tag check is *trusted* for ``TRUST_S`` (the daemon calls
       ``vouch``); with an empty allow-list, everything else shares one
       budget of ``STRANGER_RATE`` datagrams a second, so a flood of any
       number of addresses and EUIs cannot crowd out a concentrator that has
       delivered a frame. With an allow-list, EUIs outside it are rejected
       after the 12-byte header instead.

    Then the header, the allow-list and each EUI's rate are checked before
    any JSON is parsed. What the limits drop is counted as ``pf_rate``.
    """

    kind = "packet_forwarder"
    thread_prefix = "udp"

    MAX_GATEWAYS = 1024          # gateway EUIs remembered for the status report
    STATUS_GATEWAYS = 16         # of which the status report lists the last heard
    MAX_PEERS = 4096             # source addresses with a token bucket
    PEER_RATE = 5000.0           # datagrams a second per source address ...
    PEER_BURST = 10000.0         # ... with bursts of this many
    EUI_RATE = 5000.0            # datagrams a second per gateway EUI ...
    EUI_BURST = 10000.0
    STRANGER_RATE = 200.0        # datagrams a second from all untrusted pairs together ...
    STRANGER_BURST = 4000.0
    TRUST_S = 3600.0             # a pair is trusted this long after its last verified frame
    MAX_TRUSTED = 1024           # trusted (address, EUI) pairs remembered
    BATCH = 256                  # datagrams read per wake-up before logs are flushed
    RCVBUF = 8 << 20             # receive buffer asked for (the kernel may cap it)

    def __init__(self, cfg: UdpSourceConfig, sink: Sink, counters: Counters) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.sink = sink
        self.counters = counters
        self._allowed = frozenset(cfg.gateways)
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self.rcvbuf = self._grow_rcvbuf(self._sock, self.RCVBUF)
        self._sock.bind((cfg.host, cfg.port))
        host, port = self._sock.getsockname()[:2]
        self._address = (str(host), int(port))
        self._sock.settimeout(0.2)
        # The same socket without a timeout, for draining a burst: on a socket with a
        # timeout CPython polls before every receive, MSG_DONTWAIT or not, so the last
        # receive of each drain waited the whole 0.2 s for a datagram that was not coming.
        self._drain_sock = self._sock.dup()
        self._drain_sock.setblocking(False)
        self._state = LinkState.OPEN
        # EUI -> (last heard, unix s; the address it came from)
        self.gateways: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.gateways_evicted = 0
        self.datagrams = 0
        self.shed = 0                 # datagrams dropped by the rate limits
        self._peers = Buckets(self.PEER_RATE, self.PEER_BURST, self.MAX_PEERS)
        self._euis = Buckets(self.EUI_RATE, self.EUI_BURST, self.MAX_GATEWAYS)
        self._strangers = TokenBucket(self.STRANGER_RATE, self.STRANGER_BURST)
        # (address, EUI as 8 bytes) -> trusted until (monotonic s). Written by the
        # daemon's ingest thread (vouch), only read here: single dict operations.
        self._trusted: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._events = EventLog(log, period_s=60.0)
        self._debug = EventLog(log, period_s=10.0, burst=10, level=logging.DEBUG)
        # EUI -> (host, port) of its last PULL_DATA: where its downlinks go
        self._pull_peers: OrderedDict[str, Any] = OrderedDict()
        # PULL_RESP token -> (callback for its TX_ACK, sent at monotonic s)
        self._tx_pending: OrderedDict[int, tuple[Any, float]] = OrderedDict()
        self._tokens = itertools.count(random.randrange(1 << 16))

    @staticmethod
    def _grow_rcvbuf(sock: socket.socket, size: int) -> int:
        """Ask for a large receive buffer (a burst waits there instead of being dropped)."""
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)   # beyond rmem_max (root)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def _reject(self, exc: FrameError, at: float) -> None:
        self.counters.reject(exc.reason, self.name)
        if log.isEnabledFor(logging.WARNING):
            self._events.event(exc.reason, lambda: f"{self.name}: rejected packet-forwarder "
                               f"data: {clean(exc)}", at)

    def _shed(self, at: float) -> None:
        self.shed += 1
        self.counters.reject(PF_RATE, self.name)
        self._events.event(PF_RATE, f"{self.name}: datagrams dropped by the rate limits "
                           "(pf_rate: a gateway EUI over its rate)", at)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when the config asked for port 0."""
        return self._address

    def _shutdown(self) -> None:
        self._drain_sock.close()
        self._sock.close()
        self._events.close()

    def stats(self) -> dict[str, Any]:
        """State and counters for the status report; small whatever the traffic.

        ``gateways`` lists the ``STATUS_GATEWAYS`` EUIs heard last (most recent
        first), ``gateways_heard`` how many are remembered and
        ``gateways_evicted`` how many were forgotten to keep the table bounded;
        ``shed`` counts datagrams dropped by the limits, ``trusted`` the
        (address, EUI) pairs served during a flood, ``rcvbuf`` the receive
        buffer the kernel granted (bytes).
        """
        recent = list(itertools.islice(reversed(self.gateways), self.STATUS_GATEWAYS))
        return {"type": self.kind, "listen": f"{self.cfg.host}:{self.address[1]}",
                "state": self._state.value, "datagrams": self.datagrams,
                "shed": self.shed, "gateways": recent,
                "gateways_heard": len(self.gateways),
                "gateways_evicted": self.gateways_evicted,
                "peers": len(self._peers), "peers_evicted": self._peers.evicted,
                "trusted": len(self._trusted), "rcvbuf": self.rcvbuf}

    def vouch(self, receiver: Mapping[str, Any], at: float | None = None) -> None:
        """Trust the address and EUI that brought a frame which passed the tag check.

        The daemon calls this for each reception of this source that the
        pipeline verified or merged into a verified frame (a ``pending`` or
        ``merged`` verdict). The address is the one the EUI was heard from last.
        """
        eui = receiver.get("gateway_eui")
        heard = self.gateways.get(eui) if isinstance(eui, str) else None
        if heard is None or not heard[1]:
            return
        key = (heard[1], bytes.fromhex(str(eui)))
        trusted = self._trusted
        trusted[key] = (time.monotonic() if at is None else at) + self.TRUST_S
        trusted.move_to_end(key)
        while len(trusted) > self.MAX_TRUSTED:
            trusted.popitem(last=False)

    def _run(self) -> None:
        sock, drain = self._sock, self._drain_sock
        buf = bytearray(65536)
        view = memoryview(buf)
        while not self._stop.is_set():
            try:
                nbytes, peer = sock.recvfrom_into(buf)
            except TimeoutError:
                self._flush_logs()
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                self._events.event("recv", f"{self.name}: receive failed: {exc}")
                self._stop.wait(0.5)
                continue
            # Drain what the kernel holds before sleeping again. A datagram the limits
            # drop costs a receive and two or three table look-ups; the counters and
            # the log hear about the dropped ones once per batch.
            at = time.monotonic()
            shed = 0
            for _ in range(self.BATCH):
                if self._admit(view, peer, at):
                    self._serve(view, nbytes, peer)
                else:
                    shed += 1
                try:
                    nbytes, peer = drain.recvfrom_into(buf)
                except OSError:          # nothing more waiting (or an error: next round)
                    break
            else:                                    # the last one read
                if self._admit(view, peer, at):
                    self._serve(view, nbytes, peer)
                else:
                    shed += 1
            if shed:
                self._count_shed(shed, at)
            self._flush_logs()

    def _admit(self, view: memoryview, peer: Any, at: float) -> bool:
        """Whether a datagram from ``peer`` is within the stranger and address limits.

        The strangers' budget comes first: during a flood it turns most datagrams
        away with one look-up and a little arithmetic."""
        host = peer[0]
        if not self._allowed:
            until = self._trusted.get((host, bytes(view[4:12]))) if self._trusted else None
            if (until is None or until < at) and not self._strangers.allow(at):
                return False
        return self._peers.allow(host, at)

    def _count_shed(self, shed: int, at: float) -> None:
        self.datagrams += shed
        self.shed += shed
        self.counters.inc("datagrams", self.name, shed)
        self.counters.reject(PF_RATE, self.name, shed)
        self._events.event(PF_RATE, f"{self.name}: {shed} datagrams dropped by the rate "
                           "limits (pf_rate: senders over their rate, or strangers over "
                           "theirs during a flood)", at)

    def _flush_logs(self) -> None:
        now = time.monotonic()
        self._events.flush(now)
        self._debug.flush(now)

    def _serve(self, view: memoryview, nbytes: int, peer: Any) -> None:
        at = time.monotonic()
        replies = self.handle(bytes(view[:nbytes]), time.time(), at, peer[0])
        if replies and nbytes >= 12 and view[3] == PULL_DATA:
            eui = bytes(view[4:12]).hex()
            self._pull_peers[eui] = peer
            self._pull_peers.move_to_end(eui)
            while len(self._pull_peers) > self.MAX_GATEWAYS:
                self._pull_peers.popitem(last=False)
        for reply in replies:
            try:
                self._sock.sendto(reply, peer)
            except OSError as exc:
                self._debug.event("sendto", f"{self.name}: cannot answer {clean(peer)}: "
                                  f"{exc}", at)

    def handle(self, data: bytes, received_at: float, at: float,
               host: str = "") -> list[bytes]:
        """Process one datagram (from address ``host``): receptions go to the sink;
        returns the replies to send."""
        self.datagrams += 1
        self.counters.inc("datagrams", self.name)
        try:
            dgram = parse_datagram(data, self.cfg.max_datagram)
        except FrameError as exc:
            self._reject(exc, at)
            return []
        eui = dgram.gateway_eui
        if self._allowed and eui not in self._allowed:
            self._reject(FrameError(PF_GATEWAY, eui), at)
            return []
        if not self._euis.allow(eui, at):
            self._shed(at)
            return []
        self._heard(eui, received_at, host)
        reply = ack_for(dgram)
        replies = [reply] if reply is not None else []
        if dgram.ptype == TX_ACK:
            self._tx_ack(dgram)
        if dgram.ptype != PUSH_DATA:
            return replies
        try:
            doc = parse_push(dgram.body)
        except FrameError as exc:
            self._reject(exc, at)
            return replies
        if "stat" in doc:
            self.counters.inc("pf_stat", self.name)
            if log.isEnabledFor(logging.DEBUG):
                self._debug.event("stat", f"{self.name}: gateway {eui} status "
                                  f"{clean(doc['stat'])}", at)
        for pkt in doc.get("rxpk") or ():
            self.counters.inc("received", self.name)
            try:
                frame, meta = parse_rxpk(pkt, eui, self.name)
            except FrameError as exc:
                self._reject(exc, at)
                continue
            self.sink(Reception(self.name, "radio", frame, received_at, at, meta))
        return replies

    def _tx_ack(self, dgram: Datagram) -> None:
        """The outcome of one of our PULL_RESPs (protocol v2's TX_ACK)."""
        pending = self._tx_pending.pop(dgram.token, None)
        error = "NONE"
        if dgram.body.strip():
            try:
                doc = json.loads(dgram.body)
                ack = doc.get("txpk_ack") if isinstance(doc, dict) else None
                if isinstance(ack, dict) and isinstance(ack.get("error"), str):
                    error = ack["error"][:32]
            except (ValueError, UnicodeDecodeError):
                self.counters.reject(PF_JSON, self.name)
                return
        if not re.fullmatch(r"[A-Z_]{1,32}", error):
            error = "INVALID"
        self.counters.inc(f"tx_ack_{error.lower()}", self.name)
        if pending is not None:
            pending[0](None if error == "NONE" else error)

    def transmit_downlink(self, frame: bytes, window: Any, up: Any,
                          done: Any) -> str | None:
        """Send a downlink as a PULL_RESP to the concentrator that heard ``up``."""
        eui = up.receiver.get("gateway_eui")
        peer = self._pull_peers.get(eui) if isinstance(eui, str) else None
        if peer is None:
            return "no_pull"          # the concentrator has not sent a PULL_DATA yet
        tmst = up.receiver.get("tmst")
        if not isinstance(tmst, int):
            return "no_tmst"
        txpk = {"imme": False, "tmst": (tmst + round(window.delay_s * 1e6)) % (1 << 32),
                "freq": round(window.freq_hz / 1e6, 6), "rfch": 0,
                "powe": 27 if window.name == "rx2" else 14, "modu": "LORA",
                "datr": f"SF{window.sf}BW125", "codr": "4/5", "ipol": True,
                "size": len(frame), "data": base64.b64encode(frame).decode()}
        token = next(self._tokens) & 0xFFFF
        now = time.monotonic()
        while self._tx_pending and (len(self._tx_pending) >= 1024
                                    or next(iter(self._tx_pending.values()))[1] < now - 60):
            self._tx_pending.popitem(last=False)
        self._tx_pending[token] = (done, now)
        body = json.dumps({"txpk": txpk}, separators=(",", ":")).encode()
        try:
            self._sock.sendto(struct.pack(">BHB", PROTOCOL_VERSION, token, PULL_RESP) + body,
                              peer)
        except OSError as exc:
            self._tx_pending.pop(token, None)
            return f"sendto: {exc.strerror}"
        self.counters.inc("pull_resp", self.name)
        return None

    def _heard(self, eui: str, received_at: float, host: str) -> None:
        table = self.gateways
        if eui in table:
            table.move_to_end(eui)
        elif len(table) >= self.MAX_GATEWAYS:
            table.popitem(last=False)
            self.gateways_evicted += 1
        table[eui] = (received_at, host)

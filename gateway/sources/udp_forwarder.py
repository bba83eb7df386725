"""A Semtech UDP packet-forwarder source (the server side of the protocol).

Any LoRa concentrator running Semtech's packet forwarder (or a compatible
one) sends to this listener. Datagrams, protocol version 2:

    PUSH_DATA  ver | token(2) | 0x00 | gateway EUI(8) | JSON {"rxpk": [...], "stat": {...}}
    PUSH_ACK   ver | token(2) | 0x01                       (our answer, same token)
    PULL_DATA  ver | token(2) | 0x02 | gateway EUI(8)      (keep-alive, every ~10 s)
    PULL_ACK   ver | token(2) | 0x04                       (our answer, same token)

The protocol has no authentication and no retries, so everything is checked
and every fault is counted by reason:

    pf_short    datagram shorter than its header
    pf_version  protocol version other than 2
    pf_type     unknown or server-to-gateway packet type
    pf_gateway  gateway EUI not in the configured allow-list
    pf_json     PUSH_DATA body not a JSON object (or nested too deep)
    pf_field    an rxpk entry with a missing or ill-typed field, or out of range
    pf_base64   ``data`` is not valid padded base64
    pf_size     ``size`` differs from the length of ``data``
    pf_crc      ``stat`` is not 1 (the concentrator's CRC failed or was absent)
    oversize    a datagram longer than ``max_datagram`` or a packet over 255 bytes
    pf_rate     dropped unread: its source address, its gateway EUI or the
                untrusted senders together are over their rate

Well-formed PUSH_DATA and PULL_DATA headers are acknowledged at once, before
their content is looked at, as the protocol asks. ``stat`` objects (gateway
status) are counted and logged at debug level. Nothing from a datagram reaches
the log unsanitised, and every remote-triggered line is rate-limited and
aggregated (``gateway.logsafe``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import logging
import re
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knute.gateway.config import UdpSourceConfig
from knute.gateway.logsafe import EventLog, clean
from knute.gateway.model import Counters
from knute.gateway.pipeline import OVERSIZE, Reception
from knute.gateway.sources.base import LinkState, Sink, ThreadedSource
from knute.protocol import frame as pframe
from knute.protocol.errors import FrameError

log = logging.getLogger("knute.source.udp")

PROTOCOL_VERSION = 2
PUSH_DATA = 0x00
PUSH_ACK = 0x01
PULL_DATA = 0x02
PULL_RESP = 0x03
PULL_ACK = 0x04
TX_ACK = 0x05

PF_SHORT = "pf_short"
PF_VERSION = "pf_version"
PF_TYPE = "pf_type"
PF_GATEWAY = "pf_gateway"
PF_JSON = "pf_json"
PF_FIELD = "pf_field"
PF_BASE64 = "pf_base64"
PF_SIZE = "pf_size"
PF_CRC = "pf_crc"
PF_RATE = "pf_rate"

_DATR = re.compile(r"^SF(\d{1,2})BW(\d{2,3})$")


@dataclass(frozen=True)
class Datagram:
    """A checked datagram header; ``body`` is the JSON text of a PUSH_DATA."""

    version: int
    token: int
    ptype: int
    gateway_eui: str           # 16 lower-case hex digits
    body: bytes


def parse_datagram(data: bytes, max_datagram: int = 65535) -> Datagram:
    """Check a datagram's header; FrameError with a pf_* reason (or oversize)."""
    if len(data) > max_datagram:
        raise FrameError(OVERSIZE, f"{len(data)}-byte datagram")
    if len(data) < 4:
        raise FrameError(PF_SHORT)
    version, token, ptype = struct.unpack_from(">BHB", data, 0)
    if version != PROTOCOL_VERSION:
        raise FrameError(PF_VERSION, str(version))
    if ptype not in (PUSH_DATA, PULL_DATA, TX_ACK):
        raise FrameError(PF_TYPE, str(ptype))
    if len(data) < 12:
        raise FrameError(PF_SHORT)
    eui = data[4:12].hex()
    return Datagram(version, token, ptype, eui, bytes(data[12:]))


def ack_for(dgram: Datagram) -> bytes | None:
    """The PUSH_ACK or PULL_ACK answering a datagram (None for TX_ACK)."""
    if dgram.ptype == PUSH_DATA:
        return struct.pack(">BHB", dgram.version, dgram.token, PUSH_ACK)
    if dgram.ptype == PULL_DATA:
        return struct.pack(">BHB", dgram.version, dgram.token, PULL_ACK)
    return None


def parse_push(body: bytes) -> dict[str, Any]:
    """The JSON object of a PUSH_DATA; FrameError(pf_json) if it is not one."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(PF_JSON, type(exc).__name__) from None
    if not isinstance(doc, dict):
        raise FrameError(PF_JSON, "not an object")
    rxpk = doc.get("rxpk")
    if rxpk is not None and not isinstance(rxpk, list):
        raise FrameError(PF_JSON, "rxpk is not an array")
    return doc


def _number(pkt: dict[str, Any], name: str, lo: float, hi: float,
            integer: bool = False) -> Any:
    value = pkt.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        raise FrameError(PF_FIELD, name)
    if not lo <= value <= hi:
        raise FrameError(PF_FIELD, name)
    return value


def parse_rxpk(pkt: Any, gateway_eui: str, source: str) -> tuple[bytes, dict[str, Any]]:
    """(frame bytes, receiver metadata) of one rxpk entry; FrameError if it is bad."""
    if not isinstance(pkt, dict):
        raise FrameError(PF_FIELD, "rxpk entry is not an object")
    stat = pkt.get("stat")
    if isinstance(stat, bool) or not isinstance(stat, int):
        raise FrameError(PF_FIELD, "stat")
    if stat != 1:
        raise FrameError(PF_CRC, str(stat))
    data = pkt.get("data")
    if not isinstance(data, str):
        raise FrameError(PF_FIELD, "data")
    if len(data) > 4 * (pframe.MAX_FRAME + 2) // 3 + 4:
        raise FrameError(OVERSIZE, "data")
    try:
        frame = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(PF_BASE64) from None
    if len(frame) > pframe.MAX_FRAME:
        raise FrameError(OVERSIZE, f"{len(frame)} bytes")
    size = _number(pkt, "size", 0, 65535, integer=True)
    if size is not None and size != len(frame):
        raise FrameError(PF_SIZE, f"size {size}, data {len(frame)}")
    meta: dict[str, Any] = {"source": source, "gateway_eui": gateway_eui}
    rssi = _number(pkt, "rssi", -250, 50)
    if rssi is not None:
        meta["rssi_dbm"] = rssi
    lsnr = _number(pkt, "lsnr", -50, 50)
    if lsnr is not None:
        meta["snr_db"] = lsnr
    freq = _number(pkt, "freq", 1, 10000)
    if freq is not None:
        meta["freq_hz"] = round(freq * 1_000_000)
    datr = pkt.get("datr")
    if datr is not None:
        if isinstance(datr, str):
            match = _DATR.match(datr)
            if match is None:
                raise FrameError(PF_FIELD, "datr")
            meta["datr"] = datr
            meta["sf"] = int(match.group(1))
        elif isinstance(datr, int) and not isinstance(datr, bool) and 0 < datr < 1_000_000:
            meta["datr"] = datr        # FSK bit rate
        else:
            raise FrameError(PF_FIELD, "datr")
    chan = _number(pkt, "chan", 0, 255, integer=True)
    if chan is not None:
        meta["chan"] = chan
    tmst = _number(pkt, "tmst", 0, 0xFFFFFFFF, integer=True)
    if tmst is not None:
        meta["tmst"] = tmst
    for name in ("time", "modu", "codr"):
        value = pkt.get(name)
        if value is not None:
            if not isinstance(value, str) or len(value) > 40:
                raise FrameError(PF_FIELD, name)
            if name == "time":
                meta["time"] = value
    return frame, meta


class TokenBucket:
    """One token bucket: ``rate`` events a second with bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = 0.0

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens >= self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class Buckets:
    """Token buckets by key (a peer address, a gateway EUI), bounded in number.

    Each key may pass ``rate`` events a second with bursts of ``burst``. The
    table keeps the ``max_keys`` keys used last; a key pushed out is counted in
    ``evicted`` and starts again with a full bucket, so a sender that cycles
    through more keys than the table holds is not slowed by it: the other
    limits (allow-list, the cheap checks before any parsing) are what stop it.
    """

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.evicted = 0
        self._table: OrderedDict[Any, list[float]] = OrderedDict()

    def allow(self, key: Any, now: float) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        slot = self._table.get(key)
        if slot is None:
            slot = [self.burst, now]
            self._table[key] = slot
            if len(self._table) > self.max_keys:
                self._table.popitem(last=False)
                self.evicted += 1
        else:
            self._table.move_to_end(key)
            tokens = slot[0] + (now - slot[1]) * self.rate
            slot[0] = tokens if tokens < self.burst else self.burst
            slot[1] = now
        if slot[0] < 1.0:
            return False
        slot[0] -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._table)


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
        sock = self._sock
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
                    nbytes, peer = sock.recvfrom_into(buf, 0, socket.MSG_DONTWAIT)
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
        for reply in self.handle(bytes(view[:nbytes]), time.time(), at, peer[0]):
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

    def _heard(self, eui: str, received_at: float, host: str) -> None:
        table = self.gateways
        if eui in table:
            table.move_to_end(eui)
        elif len(table) >= self.MAX_GATEWAYS:
            table.popitem(last=False)
            self.gateways_evicted += 1
        table[eui] = (received_at, host)

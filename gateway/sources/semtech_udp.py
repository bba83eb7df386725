"""The Semtech UDP packet-forwarder protocol, version 2: pure parsing, no sockets.

Any LoRa concentrator running Semtech's packet forwarder (or a compatible
one) sends to this listener. Datagrams, protocol version 2:

    PUSH_DATA  ver | token(2) | 0x00 | gateway EUI(8) | JSON {"rxpk": [...], "stat": {...}}
    PUSH_ACK   ver | token(2) | 0x01                       (our answer, same token)
    PULL_DATA  ver | token(2) | 0x02 | gateway EUI(8)      (keep-alive, every ~10 s)
    PULL_ACK   ver | token(2) | 0x04                       (our answer, same token)
    PULL_RESP  ver | token(2) | 0x03 | JSON {"txpk": {...}}  (a downlink, to the PULL_DATA's
                                                            address)
    TX_ACK     ver | token(2) | 0x05 | gateway EUI(8) | JSON {"txpk_ack": {"error": ...}}

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

Every function here takes bytes or decoded JSON and returns values or raises
one ``FrameError`` with its reason; gateway.sources.udp_forwarder is the
socket around them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from knute.gateway.pipeline import OVERSIZE
from knute.protocol import frame as pframe
from knute.protocol.errors import FrameError

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

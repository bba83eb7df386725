"""A Semtech UDP packet-forwarder client for tests, written from PROTOCOL.TXT.

It plays the concentrator side: PUSH_DATA with rxpk entries (answered by
PUSH_ACK with the same token) and PULL_DATA keep-alives (answered by PULL_ACK).
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
from typing import Any

VERSION = 2
PUSH_DATA, PUSH_ACK, PULL_DATA, PULL_ACK = 0, 1, 2, 4


def rxpk(frame: bytes, **over: Any) -> dict[str, Any]:
    """One rxpk entry as a concentrator reports a good LoRa packet."""
    pkt: dict[str, Any] = {
        "time": "2024-05-01T12:00:00.000000Z", "tmst": 3512348611, "chan": 2, "rfch": 0,
        "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF9BW125", "codr": "4/5",
        "rssi": -97, "lsnr": 6.5, "size": len(frame),
        "data": base64.b64encode(frame).decode(),
    }
    pkt.update(over)
    return pkt


def push_data(eui: bytes, body: bytes | dict[str, Any], token: int | None = None,
              version: int = VERSION) -> tuple[int, bytes]:
    """(token, datagram) of a PUSH_DATA."""
    token = random.randrange(65536) if token is None else token
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return token, struct.pack(">BHB", version, token, PUSH_DATA) + eui + raw


class PacketForwarder:
    """A UDP client that sends datagrams to the gateway and reads its answers."""

    def __init__(self, host: str, port: int, eui: bytes = bytes.fromhex("aa555a0000000101")):
        self.addr = (host, port)
        self.eui = eui
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5.0)

    def send_raw(self, datagram: bytes) -> None:
        """Send any bytes."""
        self.sock.sendto(datagram, self.addr)

    def ack(self) -> bytes:
        """The next answer from the gateway."""
        data, _ = self.sock.recvfrom(65535)
        return data

    def push(self, *packets: dict[str, Any], stat: dict[str, Any] | None = None) -> int:
        """PUSH_DATA with these rxpk entries; returns the token after checking PUSH_ACK."""
        body: dict[str, Any] = {"rxpk": list(packets)}
        if stat is not None:
            body["stat"] = stat
        token, dgram = push_data(self.eui, body)
        self.send_raw(dgram)
        want = struct.pack(">BHB", VERSION, token, PUSH_ACK)
        for _ in range(10000):        # skip answers to earlier datagrams sent with send_raw
            reply = self.ack()
            if reply == want:
                return token
            assert len(reply) == 4 and reply[3] == PUSH_ACK, reply.hex()
        raise AssertionError("no PUSH_ACK with our token")

    def pull(self) -> None:
        """PULL_DATA keep-alive; checks the PULL_ACK."""
        token = random.randrange(65536)
        self.send_raw(struct.pack(">BHB", VERSION, token, PULL_DATA) + self.eui)
        reply = self.ack()
        assert reply == struct.pack(">BHB", VERSION, token, PULL_ACK), reply.hex()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

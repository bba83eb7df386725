"""firmware.drivers.mqttsub against a scripted broker on loopback (CPython, real sockets).

The broker side is written from MQTT 3.1.1 directly: it reads the client's
packets, answers CONNACK and SUBACK, and sends a retained QoS 1 PUBLISH one
byte at a time; the client must PUBACK it, deliver it once, and reconnect
with backoff after the broker hangs up.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from firmware.drivers.mqttsub import DOWN, UP, Subscriber

TOPIC = "knute/air/index/area/sentrum"


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    head = conn.recv(1)
    if not head:
        raise EOFError
    length, shift = 0, 0
    while True:
        byte = conn.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return head[0], body


class ScriptedBroker:
    """Accepts connections; logs every packet type it reads."""

    def __init__(self, payload: bytes) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(2)
        self.port = self.server.getsockname()[1]
        self.payload = payload
        self.seen: list[tuple[int, bytes]] = []
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _ in range(2):
            conn, _ = self.server.accept()
            self.connections += 1
            with conn:
                head, body = _read_packet(conn)
                self.seen.append((head, body))
                conn.sendall(b"\x20\x02\x01\x00")                   # CONNACK, accepted
                head, body = _read_packet(conn)
                self.seen.append((head, body))
                conn.sendall(b"\x90\x03" + body[:2] + b"\x01")     # SUBACK, QoS 1 granted
                topic = TOPIC.encode()
                body = len(topic).to_bytes(2, "big") + topic + b"\x12\x34" + self.payload
                packet = bytes([0x33, len(body)]) + body           # QoS 1, retain
                for i in range(len(packet)):
                    conn.sendall(packet[i:i + 1])
                    time.sleep(0.002)
                head, body = _read_packet(conn)                    # the PUBACK
                self.seen.append((head, body))
                # then hang up: the client must come back


def _step_until(client: Subscriber, done: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done():
        client.step(int(time.monotonic() * 1000))
        time.sleep(0.001)
    assert done()


def test_split_publish_is_delivered_once_acknowledged_and_the_client_reconnects() -> None:
    broker = ScriptedBroker(b'{"level": 3}')
    got: list[tuple[bytes, bytes]] = []
    client = Subscriber("127.0.0.1", broker.port, "knute-display-00000d15", TOPIC,
                        lambda t, p: got.append((bytes(t), bytes(p))),
                        lambda a, b: a - b, lambda n: 0, keepalive_s=30)
    _step_until(client, lambda: len(got) == 1)
    assert got == [(TOPIC.encode(), b'{"level": 3}')]
    assert client.state == UP
    connect, subscribe = broker.seen[0], broker.seen[1]
    assert connect[0] == 0x10 and connect[1][:7] == b"\x00\x04MQTT\x04"
    assert subscribe[0] == 0x82 and subscribe[1].endswith(TOPIC.encode() + b"\x01")
    _step_until(client, lambda: len(broker.seen) >= 3)
    assert broker.seen[2] == (0x40, b"\x12\x34")                   # PUBACK of packet 0x1234
    # The broker hangs up; the client notices, backs off, and reconnects on its own.
    _step_until(client, lambda: client.state == DOWN or broker.connections == 2)
    _step_until(client, lambda: len(got) == 2)
    assert broker.connections == 2 and client.connects == 2 and client.drops >= 1
    broker.server.close()

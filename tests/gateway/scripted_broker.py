"""A scripted MQTT broker on a loopback socket, for playing the same bytes to paho's
``Client`` (the oracle) and to ``gateway.mqttclient.ForwarderClient``.

The broker's end is a plain socket: ``read_packet`` takes what the client sent,
``sendall`` plays the script; ``pump`` is the forwarder's loop step on the client's
side. ``SCRIPTS``/``SCRIPTS_V5`` are the PUBACK scripts both clients must take alike.
"""

from __future__ import annotations

import array
import fcntl
import select
import socket
import termios
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from knute.gateway import mqttclient

CONNACK_311 = b"\x20\x02\x00\x00"
CONNACK_5 = b"\x20\x03\x00\x00\x00"

# (client class, MQTT 5?, script, publishes) -> the callbacks recorded
Player = Callable[[type[mqtt.Client], bool, list[bytes], int], list[Any]]


def puback(mid: int, tail: bytes = b"") -> bytes:
    """A PUBACK packet for ``mid``, ``tail`` (reason code, properties) after the id."""
    body = mid.to_bytes(2, "big") + tail
    return bytes([0x40, len(body)]) + body


def read_packet(conn: socket.socket) -> bytes:
    """One whole MQTT packet from the client (fixed header included)."""
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            assert chunk, "client closed"
            out += chunk
        return out
    head = exactly(1)
    length, mult, raw = 0, 1, b""
    while True:
        byte = exactly(1)
        raw += byte
        length += (byte[0] & 127) * mult
        mult *= 128
        if not byte[0] & 128:
            break
    return head + raw + exactly(length)


def pump(client: mqtt.Client, done: Any, timeout_s: float = 5.0) -> None:
    """The forwarder's loop step: select on the socket, loop_read while bytes are there."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        sock = client.socket()
        if sock is None:
            return
        buffered = getattr(client, "buffered", 0)
        readable, _, _ = select.select([sock], [], [], 0 if buffered else 0.05)
        if readable or buffered:
            client.loop_read()
        if client.want_write():
            client.loop_write()
        client.loop_misc()


def pending(sock: Any) -> int:
    """Bytes that have arrived at ``sock`` and wait to be read (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def deliver(client: mqtt.Client, conn: socket.socket, chunk: bytes,
            timeout_s: float = 5.0) -> None:
    """Send ``chunk`` from the broker's end as a segment of its own and pump the client
    until it has taken all of it: every whole packet in it handled, a part kept.

    The client's socket is empty before the send (the last chunk was taken), so the
    chunk has arrived alone when its length is readable there; it is taken when the
    socket is empty again and the client holds nothing unread (``buffered``), or when
    the client has dropped the connection."""
    conn.sendall(chunk)
    deadline = time.monotonic() + timeout_s
    sock = client.socket()
    while sock is not None and pending(sock) < len(chunk) and time.monotonic() < deadline:
        time.sleep(0.001)
    pump(client, lambda: client.socket() is None
         or (not getattr(client, "buffered", 0) and not pending(client.socket())), timeout_s)


ALL_AT_ONCE = b"".join(puback(mid) for mid in range(1, 9))

SCRIPTS = {
    "one_by_one": [puback(mid) for mid in range(1, 9)],
    "one_segment": [ALL_AT_ONCE],
    "split_inside_packets": [ALL_AT_ONCE[:3], ALL_AT_ONCE[3:9], ALL_AT_ONCE[9:]],
    "byte_by_byte": [ALL_AT_ONCE[i:i + 1] for i in range(len(ALL_AT_ONCE))],
    "malformed_then_more": [puback(1) + puback(2, b"\x00") + puback(3)],
    "eof_after_half": [puback(1) + puback(2)[:2]],
}

SCRIPTS_V5 = {
    **SCRIPTS,
    "reason_codes": [puback(1, b"\x97") + puback(2) + puback(3, b"\x10") + puback(4, b"\x00")
                     + puback(5, b"\x83\x00") + puback(6)],
    "properties": [puback(1, b"\x00\x06\x1f\x00\x03abc") + puback(2) + puback(3)],
}


def connected(client_class: type[mqtt.Client], events: list[Any], v5: bool = False,
              inflight: int = 20) -> tuple[mqtt.Client, socket.socket, socket.socket]:
    """A client connected to a scripted broker, its disconnects recorded in ``events``:
    (client, broker's end, server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = client_class(CallbackAPIVersion.VERSION2, client_id="t",
                          protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.max_inflight_messages_set(inflight)
    client.on_disconnect = lambda c, u, flags, rc, props: events.append(("disconnect",))
    client.connect("127.0.0.1", server.getsockname()[1], 60)
    conn, _ = server.accept()
    assert read_packet(conn)[0] == 0x10                              # CONNECT
    conn.sendall(CONNACK_5 if v5 else CONNACK_311)
    pump(client, lambda: client.is_connected())
    return client, conn, server


def record_publishes(client: mqtt.Client, events: list[Any]) -> None:
    """The client's ``on_publish`` calls recorded in ``events``."""
    client.on_publish = lambda c, u, mid, rc, props: events.append(
        ("publish", mid, rc.value, rc.is_failure, str(props)))


def play_script(client: mqtt.Client, conn: socket.socket, server: socket.socket,
                events: list[Any], script: list[bytes], publishes: int) -> list[Any]:
    """Take the ``publishes`` PUBLISHes the client has queued, send each chunk of
    ``script`` as its own segment, close, and return the callbacks recorded; the
    sockets are closed and the client disconnected whatever happens."""
    try:
        for _ in range(publishes):
            pump(client, lambda: not client.want_write(), 0.5)
            assert read_packet(conn)[0] & 0xF0 == 0x30                # PUBLISH
        for chunk in script:
            if chunk:
                deliver(client, conn, chunk)
        conn.close()
        pump(client, lambda: any(e[0] == "disconnect" for e in events))
    finally:
        conn.close()
        server.close()
        client.disconnect()
    return events


def same_as_paho(player: Player, v5: bool, script: list[bytes]) -> list[Any]:
    """The callbacks ``player`` records for eight publishes with paho's ``Client``,
    after asserting the ForwarderClient records the same."""
    expected = player(mqtt.Client, v5, script, 8)
    assert player(mqttclient.ForwarderClient, v5, script, 8) == expected
    return expected

"""gateway.mqttclient.ForwarderClient reads PUBACKs as paho's own Client does.

A scripted broker on a loopback socket plays the same bytes to both clients
(paho's ``Client`` is the oracle): PUBACKs one at a time, many in one segment,
split in the middle of a packet, MQTT 5 PUBACKs with a reason code and with
properties, a malformed PUBACK, and the end of the stream. Each client's
``on_publish`` and ``on_disconnect`` calls must be the same.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from knute.gateway import mqttclient

CONNACK_311 = b"\x20\x02\x00\x00"
CONNACK_5 = b"\x20\x03\x00\x00\x00"


def puback(mid: int, tail: bytes = b"") -> bytes:
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


def play(client_class: type[mqtt.Client], v5: bool, script: list[bytes],
         publishes: int) -> list[Any]:
    """Connect ``client_class`` to the scripted broker, publish ``publishes`` QoS 1
    messages, send each chunk of ``script`` (then close) and record the callbacks."""
    events: list[Any] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = client_class(CallbackAPIVersion.VERSION2, client_id="t",
                          protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.on_publish = lambda c, u, mid, rc, props: events.append(
        ("publish", mid, rc.value, rc.is_failure, str(props)))
    client.on_disconnect = lambda c, u, flags, rc, props: events.append(("disconnect",))
    client.connect("127.0.0.1", server.getsockname()[1], 60)
    conn, _ = server.accept()
    try:
        assert read_packet(conn)[0] == 0x10                         # CONNECT
        conn.sendall(CONNACK_5 if v5 else CONNACK_311)
        pump(client, lambda: client.is_connected())
        for n in range(publishes):
            client.publish(f"t/{n}", b"x" * n, qos=1)
        for _ in range(publishes):
            assert read_packet(conn)[0] & 0xF0 == 0x30              # PUBLISH
        for chunk in script:
            if chunk:
                conn.sendall(chunk)
                time.sleep(0.01)      # let each chunk arrive as its own segment
                pump(client, lambda: False, 0.2)
        conn.close()
        pump(client, lambda: any(e[0] == "disconnect" for e in events))
    finally:
        conn.close()
        server.close()
        client.disconnect()
    return events


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


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_puback_handling_matches_paho_on_mqtt_311(name: str) -> None:
    expected = play(mqtt.Client, False, SCRIPTS[name], 8)
    assert play(mqttclient.ForwarderClient, False, SCRIPTS[name], 8) == expected
    assert expected[-1] == ("disconnect",)


@pytest.mark.parametrize("name", sorted(SCRIPTS_V5))
def test_puback_handling_matches_paho_on_mqtt_5(name: str) -> None:
    expected = play(mqtt.Client, True, SCRIPTS_V5[name], 8)
    assert play(mqttclient.ForwarderClient, True, SCRIPTS_V5[name], 8) == expected


def test_the_installed_paho_has_what_the_client_overrides() -> None:
    assert mqttclient.available()
    client = mqttclient.make_client(CallbackAPIVersion.VERSION2, client_id="t")
    assert isinstance(client, mqttclient.ForwarderClient)
    assert client.buffered == 0


def topic_of(publish: bytes) -> str:
    """The topic of a PUBLISH packet (fixed header included)."""
    pos = 1
    while publish[pos] & 0x80:
        pos += 1
    pos += 1
    size = int.from_bytes(publish[pos:pos + 2], "big")
    return publish[pos + 2:pos + 2 + size].decode()


def connected(client_class: type[mqtt.Client], events: list[Any],
              inflight: int = 20) -> tuple[mqtt.Client, socket.socket, socket.socket]:
    """A client connected (MQTT 3.1.1) to a scripted broker: (client, broker's end, server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = client_class(CallbackAPIVersion.VERSION2, client_id="t")
    client.max_inflight_messages_set(inflight)
    client.on_disconnect = lambda c, u, flags, rc, props: events.append(("disconnect",))
    client.connect("127.0.0.1", server.getsockname()[1], 60)
    conn, _ = server.accept()
    assert read_packet(conn)[0] == 0x10
    conn.sendall(CONNACK_311)
    pump(client, lambda: client.is_connected())
    return client, conn, server


def test_held_writes_go_out_together_in_order() -> None:
    events: list[Any] = []
    client, conn, server = connected(mqttclient.ForwarderClient, events)
    assert isinstance(client, mqttclient.ForwarderClient)
    try:
        client.hold_writes()
        for n in range(5):
            client.publish(f"t/{n}", b"x" * n, qos=1)
        assert client.want_write()
        assert select.select([conn], [], [], 0.2)[0] == []       # nothing sent while held
        assert client.release_writes() == mqtt.MQTT_ERR_SUCCESS
        topics = []
        for _ in range(5):
            packet = read_packet(conn)
            assert packet[0] & 0xF0 == 0x30
            topics.append(topic_of(packet))
        assert topics == [f"t/{n}" for n in range(5)]
        assert not client.want_write()
    finally:
        conn.close()
        server.close()
        client.disconnect()


def test_more_than_the_hold_limit_arrives_whole_and_in_order() -> None:
    # 600 messages of 4 KB: past WRITE_HOLD_MAX paho keeps its packets queued, and the
    # socket takes only part at a time; every byte must still arrive, in order.
    events: list[Any] = []
    client, conn, server = connected(mqttclient.ForwarderClient, events, inflight=1000)
    assert isinstance(client, mqttclient.ForwarderClient)
    received: list[bytes] = []
    done = [False]

    def broker() -> None:
        while len(received) < 600:
            received.append(read_packet(conn))
        done[0] = True

    import threading
    reader = threading.Thread(target=broker, daemon=True)
    try:
        client.hold_writes()
        for n in range(600):
            client.publish(f"t/{n}", n.to_bytes(2, "big") * 2048, qos=1)
        client.release_writes()
        reader.start()
        pump(client, lambda: done[0] and not client.want_write(), timeout_s=60)
        reader.join(timeout=10)
        assert [topic_of(p) for p in received] == [f"t/{n}" for n in range(600)]
        assert all(p.endswith(n.to_bytes(2, "big") * 2048) for n, p in enumerate(received))
        assert events == []
    finally:
        conn.close()
        server.close()
        client.disconnect()


@pytest.mark.parametrize("client_class", [mqtt.Client, mqttclient.ForwarderClient])
def test_a_write_to_a_reset_connection_is_a_lost_connection_once(
        client_class: type[mqtt.Client]) -> None:
    events: list[Any] = []
    client, conn, server = connected(client_class, events)
    import struct
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()                                      # an RST, not a FIN
    server.close()
    time.sleep(0.1)
    hold = getattr(client, "hold_writes", None)
    for n in range(3):
        if hold is not None:
            hold()
        client.publish(f"t/{n}", b"x", qos=1)
        release = getattr(client, "release_writes", None)
        if release is not None:
            release()
    pump(client, lambda: bool(events), 2.0)
    assert events == [("disconnect",)]
    client.disconnect()

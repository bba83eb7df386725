"""gateway.mqttclient.ForwarderClient reads PUBACKs as paho's own Client does.

A scripted broker on a loopback socket (tests/gateway/scripted_broker.py) plays
the same bytes to both clients (paho's ``Client`` is the oracle): PUBACKs one at a
time, many in one segment, split in the middle of a packet, MQTT 5 PUBACKs with a
reason code and with properties, a malformed PUBACK, and the end of the stream.
Each client's ``on_publish`` and ``on_disconnect`` calls must be the same.
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
from tests.gateway.scripted_broker import (
    SCRIPTS,
    SCRIPTS_V5,
    connected,
    play_script,
    pump,
    read_packet,
    record_publishes,
    same_as_paho,
)


def play(client_class: type[mqtt.Client], v5: bool, script: list[bytes],
         publishes: int) -> list[Any]:
    """Connect ``client_class`` to the scripted broker, publish ``publishes`` QoS 1
    messages, send each chunk of ``script`` (then close) and record the callbacks."""
    events: list[Any] = []
    client, conn, server = connected(client_class, events, v5)
    record_publishes(client, events)
    for n in range(publishes):
        client.publish(f"t/{n}", b"x" * n, qos=1)
    return play_script(client, conn, server, events, script, publishes)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_puback_handling_matches_paho_on_mqtt_311(name: str) -> None:
    assert same_as_paho(play, False, SCRIPTS[name])[-1] == ("disconnect",)


@pytest.mark.parametrize("name", sorted(SCRIPTS_V5))
def test_puback_handling_matches_paho_on_mqtt_5(name: str) -> None:
    same_as_paho(play, True, SCRIPTS_V5[name])


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

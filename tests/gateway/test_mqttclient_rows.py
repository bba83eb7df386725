"""ForwarderClient.publish_rows: the packets paho's publish builds, and their PUBACKs.

paho's ``Client`` is the oracle again (tests/gateway/test_mqttclient.py): the same
messages published with paho's ``publish`` and with ``publish_rows`` must reach a
scripted broker as the same bytes, and the same PUBACK scripts must give the same
``on_publish`` calls. ``on_rows_acked`` takes the plain PUBACKs of rows in bulk,
in order, and never the PUBACK of a message paho published itself.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import pytest

from knute.gateway import mqttclient
from tests.gateway.scripted_broker import (
    ALL_AT_ONCE,
    SCRIPTS,
    SCRIPTS_V5,
    connected,
    deliver,
    play_script,
    puback,
    pump,
    read_packet,
    record_publishes,
    same_as_paho,
)


class Msg(NamedTuple):
    topic: str
    payload: bytes
    retain: bool = False


MESSAGES = [
    Msg("t/0", b""),
    Msg("knute/water_meter/00000001/up", b"x" * 100),
    Msg("knute/air_quality/00000002/up", b"y" * 685),
    Msg("knute/gateway/gw-1/status", b"{}", retain=True),
    Msg("vann/målere/ø", "æøå".encode() * 10),
    Msg("t/big", bytes(range(256)) * 70),        # 17,920 bytes: a 3-byte remaining length
    Msg("t/huge", b"z" * 2_100_000),             # a 4-byte remaining length
]


def broker_and_client(client_class: type[mqtt.Client], v5: bool,
                      events: list[Any]) -> tuple[mqtt.Client, socket.socket, socket.socket]:
    client, conn, server = connected(client_class, events, v5, inflight=1000)
    record_publishes(client, events)
    return client, conn, server


def publish_all(client: mqtt.Client, messages: list[Msg]) -> list[int]:
    if isinstance(client, mqttclient.ForwarderClient):
        rc, mids = client.publish_rows(messages)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return mids
    return [client.publish(m.topic, m.payload, qos=1, retain=m.retain).mid for m in messages]


def sent_packets(client_class: type[mqtt.Client], v5: bool) -> list[bytes]:
    events: list[Any] = []
    client, conn, server = broker_and_client(client_class, v5, events)
    received: list[bytes] = []
    try:
        mids = publish_all(client, MESSAGES)
        assert mids == list(range(1, len(MESSAGES) + 1))
        conn.settimeout(10)
        while len(received) < len(MESSAGES):
            pump(client, lambda: not client.want_write(), 0.5)
            while select.select([conn], [], [], 0.05)[0] and len(received) < len(MESSAGES):
                received.append(read_packet(conn))
    finally:
        conn.close()
        server.close()
        client.disconnect()
    return received


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
def test_row_packets_are_the_bytes_paho_sends(v5: bool) -> None:
    expected = sent_packets(mqtt.Client, v5)
    assert [p[0] for p in expected] == [0x33 if m.retain else 0x32 for m in MESSAGES]
    assert sent_packets(mqttclient.ForwarderClient, v5) == expected


def play_rows(client_class: type[mqtt.Client], v5: bool, script: list[bytes],
              publishes: int) -> list[Any]:
    """test_mqttclient.play with the messages published as rows (``publish_rows``) by
    the ForwarderClient, through paho's ``publish`` by paho's Client."""
    events: list[Any] = []
    client, conn, server = broker_and_client(client_class, v5, events)
    publish_all(client, [Msg(f"t/{n}", b"x" * n) for n in range(publishes)])
    return play_script(client, conn, server, events, script, publishes)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_row_pubacks_match_paho_on_mqtt_311(name: str) -> None:
    assert same_as_paho(play_rows, False, SCRIPTS[name])[-1] == ("disconnect",)


@pytest.mark.parametrize("name", sorted(SCRIPTS_V5))
def test_row_pubacks_match_paho_on_mqtt_5(name: str) -> None:
    same_as_paho(play_rows, True, SCRIPTS_V5[name])


def test_plain_row_pubacks_come_in_bulk_and_paho_keeps_its_own() -> None:
    # Rows 1-4, then a status message through paho's publish (5), then rows 6-8; the
    # broker acknowledges all in one segment, the status one in the middle.
    events: list[Any] = []
    client, conn, server = broker_and_client(mqttclient.ForwarderClient, True, events)
    assert isinstance(client, mqttclient.ForwarderClient)
    bulk: list[list[int]] = []
    client.on_rows_acked = lambda mids: bulk.append(list(mids))
    try:
        assert client.publish_rows([Msg(f"t/{n}", b"r") for n in range(4)])[1] == [1, 2, 3, 4]
        assert client.publish("status", b"s", qos=1).mid == 5
        assert client.publish_rows([Msg(f"t/{n}", b"r") for n in range(3)])[1] == [6, 7, 8]
        for _ in range(8):
            pump(client, lambda: not client.want_write(), 0.5)
            read_packet(conn)
        conn.sendall(b"".join(puback(mid) for mid in (1, 2, 3, 4, 5, 6, 7))
                     + puback(8, b"\x10"))                  # "No matching subscribers"
        pump(client, lambda: len(events) >= 2, 2.0)
        assert [mid for batch in bulk for mid in batch] == [1, 2, 3, 4, 6, 7]
        assert bulk[0] == [1, 2, 3, 4]                      # one call for the segment's run
        assert events == [("publish", 5, 0, False, "[]"), ("publish", 8, 16, False, "[]")]
        deliver(client, conn, puback(3) + puback(9))        # acknowledged before, unknown
        assert len(bulk) == 2 and len(events) == 2
    finally:
        conn.close()
        server.close()
        client.disconnect()


def test_a_topic_paho_refuses_is_refused_before_anything_is_sent() -> None:
    events: list[Any] = []
    client, conn, server = broker_and_client(mqttclient.ForwarderClient, False, events)
    assert isinstance(client, mqttclient.ForwarderClient)
    try:
        for topic in ("t/#", "t/+/x", "", "t" * 65536):
            with pytest.raises(ValueError):
                client.publish_rows([Msg("t/ok", b"1"), Msg(topic, b"x")])
            with pytest.raises(ValueError):
                mqtt.Client.publish(client, topic, b"x", qos=1)
        assert not client.want_write()
        assert select.select([conn], [], [], 0.1)[0] == []
    finally:
        conn.close()
        server.close()
        client.disconnect()


def test_rows_to_a_reset_connection_are_a_lost_connection() -> None:
    events: list[Any] = []
    client, conn, server = broker_and_client(mqttclient.ForwarderClient, False, events)
    assert isinstance(client, mqttclient.ForwarderClient)
    import struct
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()                                        # an RST, not a FIN
    server.close()
    time.sleep(0.1)
    results = [client.publish_rows([Msg(f"t/{n}", b"x" * 1000)])[0] for n in range(3)]
    pump(client, lambda: bool(events), 2.0)
    assert events == [("disconnect",)]
    assert results[-1] != mqtt.MQTT_ERR_SUCCESS
    client.disconnect()


def test_all_at_once_on_one_read_settles_every_row() -> None:
    events: list[Any] = []
    client, conn, server = broker_and_client(mqttclient.ForwarderClient, False, events)
    assert isinstance(client, mqttclient.ForwarderClient)
    bulk: list[int] = []
    client.on_rows_acked = bulk.extend
    try:
        client.publish_rows([Msg(f"t/{n}", b"x") for n in range(8)])
        for _ in range(8):
            pump(client, lambda: not client.want_write(), 0.5)
            read_packet(conn)
        conn.sendall(ALL_AT_ONCE)
        pump(client, lambda: len(bulk) == 8, 2.0)
        assert bulk == list(range(1, 9)) and events == []
        assert client.buffered == 0
    finally:
        conn.close()
        server.close()
        client.disconnect()

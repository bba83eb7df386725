"""Downlinks through real gateway processes: a command published on Mosquitto
leaves as a Semtech PULL_RESP in the uplink's RX1 window, TX_ACK errors put it
back in the queue, and two gateways sharing one registry never use a downlink
counter twice nor answer one uplink twice (kill -9 included)."""

from __future__ import annotations

import base64
import json
import os
import select
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from knute.protocol import downlink, frame
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker, free_port
from tests.gateway.pf_client import PacketForwarder, rxpk

KEY = bytes(range(16))
METER = 0x00001234
PREFIX = "t"
PULL_RESP, TX_ACK = 3, 5
RX_TMST = 1_000_000
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of docs/schema's files."""
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def water(fcnt: int, values: dict[str, Any] | None = None) -> bytes:
    """A water-meter uplink."""
    vals = {"index": 1000 + fcnt, "profile_end_h": 3, "battery": 19, "profile": [fcnt % 50]}
    vals.update(values or {})
    return frame.encode("water_meter", METER, fcnt, vals, KEY)


class Watcher:
    """Collects the command status messages (``<prefix>/+/+/down/status``)."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(broker.host, broker.port, 30)
        self.client.subscribe(f"{PREFIX}/+/+/down/status", qos=1)
        self.client.loop_start()
        assert ready.wait(10), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.topics.append(msg.topic)
            self.messages.append(json.loads(msg.payload))

    def states(self, ref: str) -> list[str]:
        """The states published so far for the command with this id."""
        with self._lock:
            return [m["state"] for m in self.messages if m.get("id") == ref]

    def command(self, topic: str, doc: dict[str, Any]) -> None:
        """Publish one command (QoS 1)."""
        self.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def gateway(root: Path, registry: Path, mqtt_port: int, name: str) -> tuple[GatewayProcess, int]:
    """A gateway with one packet-forwarder source; (process, UDP port)."""
    gw = GatewayProcess(root)
    port = free_port()
    gw.write_config(f"""
[gateway]
id = "{name}"
registry = "{registry}"
dedup_window_ms = 50
drain_timeout_s = 3
log_level = "debug"
[status]
socket = "{gw.status_socket}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
prefix = "{PREFIX}"
[[packet_forwarder]]
name = "concentrator"
listen = "127.0.0.1:{port}"
""")
    return gw, port


def pull_resp(pf: PacketForwarder, timeout: float = 10.0) -> tuple[int, dict[str, Any]] | None:
    """The next PULL_RESP the gateway sends to this forwarder: (token, txpk), or None."""
    pf.sock.settimeout(timeout)
    try:
        while True:
            data = pf.ack()
            if len(data) >= 4 and data[3] == PULL_RESP:
                return struct.unpack_from(">H", data, 1)[0], json.loads(data[4:])["txpk"]
    except TimeoutError:
        return None


def pull_resps(pfs: list[PacketForwarder], first_s: float = 4.0, second_s: float = 1.5
               ) -> list[tuple[int, tuple[int, dict[str, Any]]]]:
    """The PULL_RESPs the forwarders get for one uplink: (which, (token, txpk)), listening
    to all of them at once, for the first answer up to ``first_s``, then ``second_s``
    more for another (a second answer to the same uplink)."""
    out: list[tuple[int, tuple[int, dict[str, Any]]]] = []
    deadline = time.monotonic() + first_s
    while True:
        ready, _, _ = select.select([pf.sock for pf in pfs], [], [],
                                    max(0.0, deadline - time.monotonic()))
        if not ready:
            return out
        for n, pf in enumerate(pfs):
            if pf.sock not in ready:
                continue
            data = pf.ack()
            if len(data) >= 4 and data[3] == PULL_RESP:
                if not out:
                    deadline = time.monotonic() + second_s
                out.append((n, (struct.unpack_from(">H", data, 1)[0],
                                json.loads(data[4:])["txpk"])))


def tx_ack(pf: PacketForwarder, token: int, error: str = "NONE") -> None:
    """Answer a PULL_RESP (protocol v2)."""
    body = json.dumps({"txpk_ack": {"error": error}}).encode()
    pf.send_raw(struct.pack(">BHB", 2, token, TX_ACK) + pf.eui + body)


@pytest.fixture
def one(tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> Iterator[dict[str, Any]]:
    gw, port = gateway(tmp_path / "gw", tmp_path / "registry.db", mosquitto.port, "gw-a")
    gw.cli("devices", "add", f"{METER:08x}", "--kind", "water_meter", "--key", KEY.hex())
    watcher = Watcher(mosquitto)
    pf = PacketForwarder("127.0.0.1", port)
    try:
        yield {"gw": gw, "pf": pf, "watcher": watcher}
    finally:
        gw.close()
        pf.close()
        watcher.close()


def test_mqtt_command_leaves_in_rx1_and_tx_ack_errors_requeue(one: dict[str, Any]) -> None:
    gw, pf, watcher = one["gw"], one["pf"], one["watcher"]
    gw.start()
    wait_for(lambda: gw.status()["downlinks"]["commands_topic"]["subscribed"], 20,
             "the gateway to subscribe to the command topics")
    topic = f"{PREFIX}/water_meter/{METER:08x}/down"
    good = {"id": "c-1", "command": "config", "values": {"water.sends_per_day": 4}}
    validator("downlink_command.schema.json").validate(good)
    watcher.command(topic, good)
    watcher.command(topic, {"id": "bad", "command": "config",
                            "values": {"water.sends_per_day": 5}})
    wait_for(lambda: watcher.states("c-1") == ["queued"], 20, "c-1 queued")
    wait_for(lambda: watcher.states("bad") == ["refused"], 20, "the bad command refused")
    refused = next(m for m in watcher.messages if m.get("id") == "bad")
    assert "water.sends_per_day: 5 is outside" in refused["error"]
    pf.pull()
    pf.push(rxpk(water(1), tmst=RX_TMST, freq=868.3, datr="SF9BW125"))
    got = pull_resp(pf)
    assert got is not None, gw.log_tail()
    token, txpk = got
    print(f"txpk {txpk}")
    # RX1 on the uplink's channel; RX2 only if the machine was too slow for RX1.
    assert not txpk["imme"] and (txpk["ipol"], txpk["modu"]) == (True, "LORA")
    assert (txpk["tmst"], txpk["freq"], txpk["datr"]) in (
        (RX_TMST + 1_000_000, 868.3, "SF9BW125"), (RX_TMST + 2_000_000, 869.525, "SF12BW125"))
    raw = base64.b64decode(txpk["data"])
    assert txpk["size"] == len(raw)
    dl = downlink.decode(raw, KEY)
    assert dl["device_id"] == METER and dl["dcnt"] == 0
    assert dl["commands"] == [[1, downlink.OP_CONFIG, {1: 4}]]
    wait_for(lambda: watcher.states("c-1") == ["queued", "sent"], 20, "c-1 sent")
    # The concentrator could not send it: the command goes back to the queue ...
    tx_ack(pf, token, "TOO_LATE")
    wait_for(lambda: watcher.states("c-1")[-1:] == ["queued"], 20, "c-1 queued again")
    counters = gw.status()["sources"]["concentrator"]
    assert counters.get("tx_ack_too_late") == 1, counters
    # ... and leaves again after the next uplink, under a new counter.
    pf.push(rxpk(water(2), tmst=RX_TMST + 5_000_000, freq=868.1, datr="SF12BW125"))
    got = pull_resp(pf)
    assert got is not None
    token, txpk = got
    again = downlink.decode(base64.b64decode(txpk["data"]), KEY)
    assert again["dcnt"] == 1 and again["commands"] == dl["commands"]
    assert txpk["tmst"] in (RX_TMST + 6_000_000, RX_TMST + 7_000_000)
    assert txpk["datr"] == "SF12BW125"
    tx_ack(pf, token)
    show = json.loads(gw.cli("devices", "show", f"{METER:08x}", "--json").stdout)
    assert show["downlink_counter"] == 1
    assert [(c["cmd_id"], c["state"], c["sends"]) for c in show["downlinks"]] == [
        (1, "sent", 2)]
    # The node applied it and says so in its next uplink's report.
    report = [downlink.FLAG_WANT, 1 << 8 | downlink.APPLIED]
    pf.push(rxpk(water(3, {"dl": report}), tmst=RX_TMST + 9_000_000))
    wait_for(lambda: watcher.states("c-1")[-1:] == ["applied"], 20, "c-1 applied")
    assert watcher.states("c-1") == ["queued", "sent", "queued", "sent", "applied"]
    assert pull_resp(pf, timeout=2.0) is None           # nothing left to send
    assert gw.stop() == 0
    status = validator("downlink_status.schema.json")
    assert watcher.messages and set(watcher.topics) == {f"{topic}/status"}
    for msg in watcher.messages:
        status.validate(msg)


def test_hostile_command_messages_are_refused_and_the_gateway_goes_on(
        one: dict[str, Any]) -> None:
    gw, watcher = one["gw"], one["watcher"]
    gw.start()
    wait_for(lambda: gw.status()["downlinks"]["commands_topic"]["subscribed"], 20,
             "the gateway to subscribe to the command topics")
    topic = f"{PREFIX}/water_meter/{METER:08x}/down"
    hostile: list[tuple[str, bytes]] = [
        (topic, b"not json"), (topic, b"\xff\xfe\x00"), (topic, b"[1, 2]"),
        (topic, b"{" * 100_000), (topic, json.dumps({"id": "x" * 500}).encode()),
        (topic, json.dumps({"id": "r1", "command": "rekey", "values": {"a": 1}}).encode()),
        (topic, json.dumps({"id": "c9", "command": "config",
                            "values": {"radio.sf": 13}}).encode()),
        (f"{PREFIX}/air_quality/{METER:08x}/down",
         json.dumps({"id": "k", "command": "time"}).encode()),
        (f"{PREFIX}/water_meter/00009999/down",
         json.dumps({"id": "u", "command": "time"}).encode()),
        (f"{PREFIX}/water_meter/zz/down", json.dumps({"id": "z", "command": "time"}).encode()),
    ]
    for where, payload in hostile:
        watcher.client.publish(where, payload, qos=1).wait_for_publish(10)
    watcher.command(topic, {"id": "ok", "command": "time"})
    wait_for(lambda: watcher.states("ok") == ["queued"], 20, "the good command queued")
    listener = gw.status()["downlinks"]["commands_topic"]
    assert listener["refused"] == len(hostile), listener
    refused = [m for m in watcher.messages if m["state"] == "refused"]
    print("\n".join(f"{m['id']!s:.12}: {m['error']}" for m in refused))
    # Every refusal the gateway can address (a registered device id) is published.
    assert len(refused) == len(hostile) - 1
    assert all(len(m["error"]) < 200 and "\n" not in m["error"] for m in refused)
    status = validator("downlink_status.schema.json")
    for msg in watcher.messages:
        status.validate(msg)
    show = json.loads(gw.cli("devices", "show", f"{METER:08x}", "--json").stdout)
    assert [(c["id"], c["state"]) for c in show["downlinks"]] == [("ok", "queued")]
    assert gw.stop() == 0


def test_two_gateways_share_the_counter_and_answer_each_uplink_once(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    registry = tmp_path / "registry.db"
    gws = [gateway(tmp_path / name, registry, mosquitto.port, name) for name in ("a", "b")]
    gws[0][0].cli("devices", "add", f"{METER:08x}", "--kind", "water_meter", "--key",
                  KEY.hex())
    pfs = [PacketForwarder("127.0.0.1", port, eui=bytes([0xaa, 0, 0, 0, 0, 0, 0, n]))
           for n, (_, port) in enumerate(gws)]
    try:
        for gw, _ in gws:
            gw.start()
        for pf in pfs:
            pf.pull()
        gws[0][0].cli("devices", "send", f"{METER:08x}", "reboot")
        seen: list[int] = []
        answered: list[str] = []
        for fcnt in range(1, 13):
            if fcnt == 7:                       # one gateway dies mid-run and comes back
                gws[1][0].kill()
                gws[1][0].start()
                pfs[1].pull()
            up = water(fcnt)
            for pf in pfs:                      # both concentrators hear the uplink
                pf.push(rxpk(up, tmst=RX_TMST * fcnt))
            answers: list[tuple[int, int]] = []
            for n, (token, txpk) in pull_resps(pfs):
                tx_ack(pfs[n], token)
                answers.append((n, downlink.decode(base64.b64decode(txpk["data"]), KEY)["dcnt"]))
            assert len(answers) == 1, f"uplink {fcnt}: answers {answers}"
            answered.append("ab"[answers[0][0]])
            seen.append(answers[0][1])
        print(f"downlink counters {seen}, answered by {''.join(answered)}")
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        for gw, _ in gws:
            assert gw.stop() == 0
    finally:
        for gw, _ in gws:
            gw.close()
        for pf in pfs:
            pf.close()

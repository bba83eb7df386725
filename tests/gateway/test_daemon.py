"""``knute gateway run`` as a real process: serial ptys, a UDP packet forwarder,
a real MQTT broker; hostile input, unplugged radios, broker outages, kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.protocol import frame, stream
from knute.tools.rig.faults import FaultyLink
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.ptys import Pty
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for
from tests.conftest import Broker, free_port
from tests.gateway.pf_client import PacketForwarder, push_data, rxpk

KEY = bytes(range(16))
KEY_HEX = KEY.hex()
WRONG_KEY = bytes(16)
METER = 0x00001234
METER2 = 0x00005678
AIR = 0x0000A1A1
PREFIX = "t"


def water(fcnt: int, dev: int = METER, key: bytes = KEY, index: int = 1000) -> bytes:
    """A water-meter frame."""
    return frame.encode("water_meter", dev, fcnt, {"index": index + fcnt, "profile_end_h": 3,
                                                   "battery": 19, "profile": [fcnt % 50]}, key)


def air(fcnt: int) -> bytes:
    """An air-quality frame."""
    return frame.encode("air_quality", AIR, fcnt, {"pm2_5": 123, "temperature": -55,
                                                   "status": 0}, KEY)


def rec(buf: bytes) -> bytes:
    """A serial FRAME record."""
    return stream.encode_record(stream.REC_FRAME, buf)


def radio(buf: bytes, rssi: int = -88) -> bytes:
    """A radio-bridge RADIO record."""
    return stream.encode_record(stream.REC_RADIO,
                                stream.pack_radio(rssi, 55, 868_100_000, 9, buf))


class Gateway(GatewayProcess):
    """One gateway installation in a temp dir, run as ``knute gateway run``."""

    def __init__(self, root: Path, mqtt_port: int) -> None:
        super().__init__(root)
        self.udp_port = free_port()
        self.metrics_port = free_port()
        self.write_config(f"""
[gateway]
id = "gw-test"
dedup_window_ms = 200
drain_timeout_s = 5
log_level = "debug"
[spool]
max_mb = 16
[status]
socket = "{self.status_socket}"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
prefix = "{PREFIX}"
[[serial]]
name = "wired"
url = "ttyWIRED"
reopen_min_s = 0.05
reopen_max_s = 0.3
[[serial]]
name = "bridge"
url = "ttyBRIDGE"
reopen_min_s = 0.05
reopen_max_s = 0.3
[[packet_forwarder]]
name = "concentrator"
listen = "127.0.0.1:{self.udp_port}"
""")
        for dev, kind in ((METER, "water_meter"), (METER2, "water_meter"),
                          (AIR, "air_quality")):
            self.devices("add", f"{dev:08x}", "--kind", kind, "--key", KEY_HEX)

    def devices(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``knute devices ... --config``."""
        return self.cli("devices", *args)

    def rejected(self, source: str) -> dict[str, int]:
        """Rejections by reason for one source."""
        return dict(self.status()["sources"][source]["rejected_by_reason"])

    def spooled(self) -> tuple[dict[int, int], set[str]]:
        """The replay counters and the reading ids committed in the spool database.

        Rows with counter 0 are the gateway's own messages, not readings (a downlink's
        status, such as the data-rate command a LoRa node earns after a few strong
        frames; a condition), published on other topics than ``.../up``; the tests'
        frames count from 1.
        """
        db = sqlite3.connect(str(self.root / "spool.db"), timeout=10)
        try:
            counters = {int(d): int(f) for d, f in db.execute(
                "SELECT device_id, fcnt FROM replay")}
            ids = {f"{d:08x}:{f}" for d, f in db.execute(
                "SELECT device_id, fcnt FROM rows WHERE fcnt > 0")}
            return counters, ids
        finally:
            db.close()


@pytest.fixture
def setup(tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> Iterator[dict[str, Any]]:
    """A registered gateway (not started), two ptys, a relay to the broker, a subscriber."""
    proxy = FaultyLink((mosquitto.host, mosquitto.port))
    gw = Gateway(tmp_path, proxy.port)
    wired = Pty(tmp_path / "ttyWIRED")
    bridge = Pty(tmp_path / "ttyBRIDGE")
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{PREFIX}/+/+/up")
    pf = PacketForwarder("127.0.0.1", gw.udp_port)
    try:
        yield {"gw": gw, "wired": wired, "bridge": bridge, "sub": sub, "pf": pf,
               "proxy": proxy, "broker": mosquitto}
    finally:
        gw.close()
        sub.disconnect()
        pf.close()
        wired.close()
        bridge.close()
        proxy.close()


def test_hostile_input_on_every_source(setup: dict[str, Any]) -> None:
    gw, wired, bridge, sub, pf = (setup[k] for k in ("gw", "wired", "bridge", "sub", "pf"))
    gw.start()
    good = water(10)
    wrong_tag = water(11, key=WRONG_KEY)
    unknown = water(1, dev=0xDEADBEEF)
    truncated = water(12)[:10]
    # Serial, wired node: garbage, a truncated frame, an oversize record, a wrong tag,
    # an unknown device, then a good frame and its replay.
    wired.write(b"\xde\xad\xbe\xef" * 20 + b"\x00" + rec(truncated) + b"\x01" * 700 + b"\x00"
                + rec(wrong_tag) + rec(unknown) + rec(bytes([0x41]) + bytes(279)) + rec(good))
    wait_for(lambda: "00001234:10" in sub.ids(), what="the good serial frame")
    wired.write(rec(good) + rec(water(9)))
    wait_for(lambda: gw.rejected("wired").get("replay"), what="serial replay")
    assert gw.rejected("wired") == {"link_cobs": 1, "frame_short": 1, "link_oversize": 1,
                                    "frame_tag": 1, "unknown_device": 1, "oversize": 1,
                                    "duplicate": 1, "replay": 1}
    # Radio bridge (RADIO records) and the packet forwarder: the same bad frames.
    for buf in (truncated, wrong_tag, unknown, water(5)):
        bridge.write(radio(buf))
        pf.push(rxpk(buf))
    pf.push(rxpk(good, stat=-1), rxpk(b"\x00" * 300, size=300))
    pf.send_raw(b"\x01\x00\x00\x00" + bytes(8) + b"{}")          # wrong protocol version
    pf.send_raw(b"\x02\x12\x34\x00" + bytes(8) + b'{"rxpk": [')  # bad JSON (still acked)
    assert pf.ack() == b"\x02\x12\x34\x01"
    bridge.write(stream.encode_record(stream.REC_RADIO, b"\x01"))
    expected = {"frame_short": 1, "frame_tag": 1, "unknown_device": 1, "replay": 1}
    wait_for(lambda: gw.rejected("bridge") == {**expected, "link_radio": 1},
             what="bridge rejections")
    wait_for(lambda: gw.rejected("concentrator") == {
        **expected, "pf_crc": 1, "oversize": 1, "pf_version": 1, "pf_json": 1},
        what="packet forwarder rejections")
    # One new frame heard by both radio receivers: one reading, two receivers.
    both = water(20)
    bridge.write(radio(both, rssi=-70))
    pf.push(rxpk(both, rssi=-101))
    reading = wait_for(lambda: [m for m in sub.readings() if m["id"] == "00001234:20"],
                       what="merged reading")[0]
    assert sorted(r["source"] for r in reading["receivers"]) == ["bridge", "concentrator"]
    by_source = {r["source"]: r for r in reading["receivers"]}
    assert by_source["bridge"]["rssi_dbm"] == -70 and by_source["bridge"]["sf"] == 9
    assert by_source["concentrator"]["gateway_eui"] == pf.eui.hex()
    assert by_source["concentrator"]["datr"] == "SF9BW125"
    assert reading["source"] == "radio"
    st = gw.status()
    assert st["totals"]["accepted"] == 2 and st["totals"]["merged"] == 1
    # Still running, all sources up; status CLI and metrics agree with the socket.
    out = subprocess.run([str(gw.knute), "gateway", "status", "--config", str(gw.config),
                          "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"]["accepted"] == 2
    human = subprocess.run([str(gw.knute), "gateway", "status", "--config", str(gw.config)],
                           capture_output=True, text=True, timeout=30).stdout
    assert "accepted 2" in human and "concentrator" in human
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                     timeout=10).read().decode()
    assert 'knute_gateway_rejected_total{reason="unknown_device",source="wired"} 1.0' in metrics
    assert 'knute_gateway_accepted_total{source="bridge"} 1.0' in metrics
    # Unknown devices are logged once an hour per device, however often they send.
    for _ in range(3):
        wired.write(rec(unknown))
    wait_for(lambda: gw.rejected("wired")["unknown_device"] == 4, what="unknown counted")
    assert gw.stop() == 0
    assert gw.log.read_text().count("frame from unknown device deadbeef") == 1
    assert sum(1 for m in sub.readings() if m["id"] == "00001234:10") == 1


def test_unplugged_radio_comes_back_and_devices_change_live(setup: dict[str, Any]) -> None:
    gw, bridge, sub = setup["gw"], setup["bridge"], setup["sub"]
    gw.start()
    wait_for(lambda: gw.status()["sources"]["bridge"]["state"] == "open", what="bridge open")
    bridge.write(radio(water(1)))
    wait_for(lambda: "00001234:1" in sub.ids(), what="first frame")
    bridge.unplug()
    wait_for(lambda: gw.status()["sources"]["bridge"]["state"] == "backoff",
             what="bridge lost")
    bridge.plug()
    wait_for(lambda: gw.status()["sources"]["bridge"]["state"] == "open", what="bridge back")
    bridge.write(radio(water(2)))
    wait_for(lambda: "00001234:2" in sub.ids(), what="frame after replug")
    src = gw.status()["sources"]["bridge"]
    assert src["opens"] == 2 and src["losses"] == 1
    # A device added while running is picked up (the CLI asks the daemon to reload).
    new = 0x00C0FFEE
    bridge.write(radio(water(1, dev=new)))
    wait_for(lambda: gw.rejected("bridge").get("unknown_device") == 1, what="unknown")
    gw.devices("add", f"{new:08x}", "--kind", "water_meter", "--key", KEY_HEX)
    bridge.write(radio(water(2, dev=new)))
    wait_for(lambda: "00c0ffee:2" in sub.ids(), what="new device's frame")
    # SIGHUP re-reads the registry too: remove the device behind the daemon's back.
    gw.devices("remove", f"{new:08x}")
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["devices"] == 3, what="reload")
    bridge.write(radio(water(3, dev=new)))
    wait_for(lambda: gw.rejected("bridge").get("unknown_device") == 2, what="removed device")
    # A node that lost its counter is held back until the operator resets it.
    bridge.write(radio(water(40)))
    wait_for(lambda: "00001234:40" in sub.ids(), what="counter 40")
    bridge.write(radio(water(0)))
    wait_for(lambda: gw.rejected("bridge").get("counter_reset") == 1 or
             gw.rejected("bridge").get("replay"), what="low counter")
    assert gw.rejected("bridge").get("replay") is None
    assert "reset-counter 00001234" in gw.log.read_text()
    gw.devices("reset-counter", f"{METER:08x}")
    bridge.write(radio(water(0)))
    wait_for(lambda: "00001234:1:0" in sub.ids(), what="frame after counter reset (epoch 1)")
    assert gw.stop() == 0


def send_stream(pf: PacketForwarder, wired: Pty, fcnts: range) -> None:
    """Frames of two devices, alternating between the serial link and the UDP source."""
    for fcnt in fcnts:
        wired.write(rec(water(fcnt, dev=METER)))
        pf.push(rxpk(water(fcnt, dev=METER2)))
        time.sleep(0.005)


def check_order_and_ids(readings: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per device, first deliveries are in counter order; a repeated id repeats its content."""
    first: dict[str, dict[str, Any]] = {}
    order: dict[str, list[int]] = {}
    for m in readings:
        seen = first.get(m["id"])
        if seen is not None:
            assert seen == m, f"id {m['id']} delivered twice with different content"
            continue
        first[m["id"]] = m
        order.setdefault(m["device"], []).append(m["fcnt"])
    for device, fcnts in order.items():
        assert fcnts == sorted(fcnts), f"{device} out of order: {fcnts}"
    return order


def test_broker_outage_loses_nothing_and_keeps_order(setup: dict[str, Any]) -> None:
    gw, wired, sub, pf, proxy, broker = (setup[k] for k in (
        "gw", "wired", "sub", "pf", "proxy", "broker"))
    gw.start()
    wait_for(lambda: gw.status()["forwarder"].get("state") == "open", what="mqtt up")
    send_stream(pf, wired, range(1, 31))
    wait_for(lambda: len(sub.ids()) >= 10, what="first readings")
    broker.stop()
    proxy.set_mode("down")
    sub.disconnect()
    send_stream(pf, wired, range(31, 81))       # spooled while the broker is away
    wait_for(lambda: gw.status()["totals"]["accepted"] == 160, what="all accepted")
    assert gw.status()["forwarder"]["state"] != "open"
    broker.start()
    sub.connect()
    proxy.set_mode("relay")
    send_stream(pf, wired, range(81, 91))
    want = {f"{d:08x}:{f}" for d in (METER, METER2) for f in range(1, 91)}
    try:
        wait_for(lambda: want <= sub.ids(), timeout=60, what="every reading after the outage")
    except WaitTimeout:
        missing = sorted(want - sub.ids())
        raise AssertionError(
            f"{len(missing)} readings never arrived: {missing[:20]}\n"
            f"gateway status: {json.dumps(gw.status())}\n"
            f"proxy connections: {proxy.connections}\n"
            f"gateway log (tail):\n{gw.log_tail()}") from None
    order = check_order_and_ids(sub.readings())
    # Readings that reached the first broker session may be missing from the
    # subscriber's view only if they were published during the outage, which
    # cannot happen: nothing is acknowledged without a broker.
    assert set(order) == {f"{METER:08x}", f"{METER2:08x}"}
    wait_for(lambda: gw.status()["spool"]["depth"] == 0, what="spool drained")
    assert gw.status()["totals"]["forwarded"] >= 180
    assert gw.stop() == 0


def test_kill_9_loses_nothing_accepted_and_rejects_replays(setup: dict[str, Any]) -> None:
    gw, wired, sub, pf, proxy = (setup[k] for k in ("gw", "wired", "sub", "pf", "proxy"))
    proxy.set_mode("down")    # hold delivery back, so the kill hits a full spool
    gw.start()
    sent: dict[str, bytes] = {}
    stop = threading.Event()

    def stream_frames() -> None:
        # A steady stream on both sources; keeps going while the gateway dies.
        for fcnt in range(1, 200):
            if stop.is_set():
                return
            a, b = water(fcnt, dev=METER), water(fcnt, dev=METER2)
            sent[f"{METER:08x}:{fcnt}"] = a
            sent[f"{METER2:08x}:{fcnt}"] = b
            try:
                wired.write(rec(a))
                pf.send_raw(push_data(pf.eui, {"rxpk": [rxpk(b)]})[1])
            except OSError:
                return
            time.sleep(0.01)

    sender = threading.Thread(target=stream_frames, daemon=True)
    sender.start()
    try:
        wait_for(lambda: gw.status()["totals"]["accepted"] >= 30, what="some accepted")
        gw.kill()                                   # mid-stream
        time.sleep(0.1)
    finally:
        stop.set()
        sender.join(timeout=10)
    counters, want = gw.spooled()
    assert len(want) >= 30
    # Every spooled row advanced its device's counter in the same transaction.
    assert {f"{d:08x}:{last}" for d, last in counters.items()} <= want
    proxy.set_mode("relay")
    gw.start()
    try:
        wait_for(lambda: want <= sub.ids(), timeout=60, what="every accepted reading")
    except WaitTimeout as exc:     # say where the readings stood, not only that they are late
        missing = sorted(want - sub.ids())
        raise WaitTimeout(f"{exc}: {len(missing)} of {len(want)} missing ({missing[:5]}...); "
                          f"subscriber connects {sub.connects}; gateway status "
                          f"{json.dumps(gw.try_status())[:1500]}; log:\n"
                          f"{gw.log_tail(40)}") from None
    # Replays of accepted frames are rejected after the restart, none is accepted.
    before = gw.status()["totals"]
    replays = sorted(want)[:20]
    for rid in replays:
        dev = rid.split(":")[0]
        if dev == f"{METER:08x}":
            wired.write(rec(sent[rid]))
        else:
            pf.push(rxpk(sent[rid]))
    wait_for(lambda: gw.status()["totals"]["rejected"] - before.get("rejected", 0) == 20,
             what="replays rejected")
    after = gw.status()
    assert after["totals"]["accepted"] == before["accepted"]
    reasons = after["rejected"]
    assert sum(reasons.get(r, 0) for r in ("replay", "duplicate", "counter_reset")) == 20
    # New frames are accepted and delivered after the restart.
    send_stream(pf, wired, range(300, 305))
    more = {f"{d:08x}:{f}" for d in (METER, METER2) for f in range(300, 305)}
    wait_for(lambda: more <= sub.ids(), what="frames after the restart")
    check_order_and_ids(sub.readings())
    for m in sub.readings():   # every reading is one the nodes sent, none invented
        assert m["id"] in sent or m["id"] in more
    assert gw.stop() == 0


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from knute.gateway.logsetup import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("info", as_json=True)
        # A logger of this test's own: a level another test left on "knute" must not hide it.
        logger = logging.getLogger("logsetup_test")
        logger.setLevel(logging.NOTSET)
        logger.warning("device %s: %s", "00001234", "unknown")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert (doc["level"], doc["logger"], doc["msg"]) == (
        "warning", "logsetup_test", "device 00001234: unknown")

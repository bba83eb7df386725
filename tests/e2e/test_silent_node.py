"""The silent-node alarm on real processes: the gateway, Mosquitto and a packet forwarder.

Three water meters send through a concentrator's packet forwarder (this test
plays it over UDP) on a short send interval (``[silence.interval_s]``): one
sends every interval, one loses single frames now and then, one stops and
comes back. Only the stopped one gets a retained ``silent`` condition, and a
``heard`` one when its frames arrive again; ``knute gateway status`` and the
Prometheus endpoint count it while it is silent. The frames come on all eight
channels of the plan and every SF, and the gateway accepts them all.

Each device is overdue by its own send interval (the registry's, set here with
``knute devices add --interval-s`` and ``knute devices import``): of two meters
that stop together, the one sending every second is silent after 3.5 s, the
one sending every 3 s only after 10.5 s, and a meter without an interval of its
own keeps its kind's (a minute here) and is not silent at all in that time.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from knute.gateway.registry import Registry
from knute.protocol import frame
from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd import EU868_CHANNELS_MHZ, ForwarderClient, rxpk
from tests.conftest import Broker, free_port

KEY = bytes(range(16))
STEADY, LOSSY, STOPPED = 0x51000001, 0x51000002, 0x51000003
INTERVAL_S = 1.0
MISSED = 3               # silent after 3.5 s without a frame


def _config(root: Path, broker: Broker, udp_port: int, metrics_port: int,
            socket: str, kind_interval_s: float = INTERVAL_S) -> str:
    return f"""
[gateway]
id = "silence"
data_dir = "{root}"

{status_and_broker(socket, broker.host, broker.port, "city")}
[metrics]
listen = "127.0.0.1:{metrics_port}"

[[packet_forwarder]]
name = "conc"
listen = "127.0.0.1:{udp_port}"

[silence]
missed_intervals = {MISSED}

[silence.interval_s]
water_meter = {kind_interval_s}
"""


class Conditions:
    """Every condition message the broker delivers (retained ones included)."""

    def __init__(self, broker: Broker) -> None:
        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.heard_on: set[tuple[int, int]] = set()     # (freq_hz, sf) of accepted readings
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="silence-watch")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 30)
        self.client.subscribe([("city/+/+/condition", 1), ("city/+/+/up", 1)])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/up"):
                self.heard_on.update((r["freq_hz"], r["sf"]) for r in doc["receivers"])
            else:
                self.got.append((msg.topic, doc, bool(msg.retain)))

    def of(self, device: int) -> list[dict[str, Any]]:
        with self.lock:
            return [doc for topic, doc, _ in self.got if f"/{device:08x}/" in topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _retained(broker: Broker, topic: str) -> dict[str, Any]:
    """What a consumer subscribing now gets on ``topic`` (the retained message)."""
    box: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="silence-late")
    client.on_message = lambda _c, _u, msg: box.append(
        {"retain": msg.retain, **json.loads(msg.payload)})
    client.connect(broker.host, broker.port, 30)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        wait_for(lambda: bool(box), 10, f"a retained message on {topic}")
    finally:
        client.loop_stop()
        client.disconnect()
    return box[-1]


def _stop_all(quit_meters: threading.Event, sender: threading.Thread,
              conditions: Conditions, conc: ForwarderClient, gateway: GatewayProcess) -> None:
    """The end of each test: the meters' thread stopped, then the rest closed."""
    quit_meters.set()
    if sender.is_alive():
        sender.join(10)
    conditions.close()
    conc.close()
    gateway.stop(timeout=20)
    gateway.close()


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def test_stopped_node_goes_silent_and_clears_lossy_node_never_does(
        mosquitto: Broker, tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "registry.db"))
    for dev in (STEADY, LOSSY, STOPPED):
        reg.add(dev, "water_meter", KEY)
    reg.close()
    udp_port, metrics_port = free_port(), free_port()
    gateway = GatewayProcess(tmp_path / "gw")
    gateway.write_config(_config(tmp_path, mosquitto, udp_port, metrics_port,
                                 gateway.status_socket))
    conditions = Conditions(mosquitto)
    fcnt = {STEADY: 0, LOSSY: 0, STOPPED: 0}
    conc = ForwarderClient(bytes.fromhex("aa555a0000000201"), "127.0.0.1", udp_port)

    def send(dev: int) -> None:
        fcnt[dev] += 1
        buf = frame.encode("water_meter", dev, fcnt[dev], {
            "index": fcnt[dev], "profile_end_h": 0, "alarms": 0, "battery": 20,
            "profile": [1]}, KEY)
        # Every channel of the plan and every SF: the gateway takes them all.
        conc.push([rxpk(buf, rssi_dbm=-100, lsnr_db=2.0, sf=7 + fcnt[dev] % 6,
                        freq_mhz=EU868_CHANNELS_MHZ[fcnt[dev] % 8], chan=fcnt[dev] % 8)])

    # The meters, on their own thread so that they keep their schedule while the test
    # checks the gateway. The lossy meter loses every third frame (a gap of two
    # intervals, under the three that make a node silent).
    stopped_sends = threading.Event()
    stopped_sends.set()
    quit_meters = threading.Event()
    rounds = [0]

    def meters() -> None:
        i = 0
        while not quit_meters.is_set():
            send(STEADY)
            if i % 3 != 2:
                send(LOSSY)
            if stopped_sends.is_set():
                send(STOPPED)
            i += 1
            rounds[0] = i
            quit_meters.wait(INTERVAL_S)   # the send interval itself

    sender = threading.Thread(target=meters, name="meters", daemon=True)
    try:
        gateway.start()
        sender.start()
        wait_for(lambda: rounds[0] >= 3, 30, "three send intervals")
        assert gateway.status()["silence"]["silent"] == 0
        # The meter stops; the others carry on.
        stopped_sends.clear()
        wait_for(lambda: any(c["condition"] == "silent" for c in conditions.of(STOPPED)),
                 30, "the silent condition")
        st = gateway.status()
        # On failure, the conditions and the gateway's log say what happened (a silent
        # device that came back at once was seen once under load, with nothing to go on).
        why = f"conditions {conditions.of(STOPPED)}; log:\n{gateway.log_tail(40)}"
        assert st["silence"]["silent"] == 1, why
        assert st["silence"]["devices"] == [f"{STOPPED:08x}"], why
        assert _metric(metrics_port, "knute_gateway_silent_devices") == 1.0
        assert "silent: 1 devices: 51000003" in gateway.cli("gateway", "status").stdout
        late = _retained(mosquitto, f"city/water_meter/{STOPPED:08x}/condition")
        assert late["retain"] and late["condition"] == "silent"
        assert late["reason"] == "overdue" and late["source"] == "radio"
        assert late["interval_s"] == INTERVAL_S and late["consecutive_failures"] == MISSED
        assert late["gateway"] == "silence" and late["last_seen"] < late["since"]

        # It comes back: "heard", retained, and the count drops to 0.
        stopped_sends.set()
        wait_for(lambda: any(c["condition"] == "heard" for c in conditions.of(STOPPED)),
                 20, "the heard condition")
        wait_for(lambda: gateway.status()["silence"]["silent"] == 0, 10, "silent back to 0")
        assert _metric(metrics_port, "knute_gateway_silent_devices") == 0.0
        back = _retained(mosquitto, f"city/water_meter/{STOPPED:08x}/condition")
        assert back["condition"] == "heard" and back["reason"] is None
        # A few more intervals with every meter sending: nothing else is raised.
        seen = rounds[0]
        wait_for(lambda: rounds[0] >= seen + 3, 30, "three more send intervals")
        assert [c["condition"] for c in conditions.of(STOPPED)] == ["silent", "heard"]
        # Neither the steady meter nor the one that lost single frames was ever silent.
        assert conditions.of(STEADY) == [] and conditions.of(LOSSY) == []
        assert fcnt[LOSSY] < fcnt[STEADY]
        with conditions.lock:
            heard_on = set(conditions.heard_on)
        assert {f for f, _ in heard_on} == {round(f * 1e6) for f in EU868_CHANNELS_MHZ}
        assert {sf for _, sf in heard_on} == {7, 8, 9, 10, 11, 12}
    finally:
        _stop_all(quit_meters, sender, conditions, conc, gateway)


FAST, SLOW, PLAIN = 0x52000001, 0x52000002, 0x52000003
FAST_S, SLOW_S, KIND_S = 1.0, 3.0, 60.0


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_two_meters_of_one_kind_are_overdue_by_their_own_intervals(
        mosquitto: Broker, tmp_path: Path) -> None:
    udp_port, metrics_port = free_port(), free_port()
    gateway = GatewayProcess(tmp_path / "gw")
    gateway.write_config(_config(tmp_path, mosquitto, udp_port, metrics_port,
                                 gateway.status_socket, kind_interval_s=KIND_S))
    # The intervals as an operator registers them: one by hand, one from an import file
    # (the form knute provision --csv writes), one left to its kind's.
    gateway.cli("devices", "add", f"{FAST:08x}", "--kind", "water_meter", "--key", KEY.hex(),
                "--interval-s", str(FAST_S))
    csv_file = tmp_path / "meters.csv"
    csv_file.write_text("device_id,kind,key,name,site,interval_s\n"
                        f"{SLOW:08x},water_meter,{KEY.hex()},slow,,{SLOW_S:g}\n"
                        f"{PLAIN:08x},water_meter,{KEY.hex()},plain,,\n")
    gateway.cli("devices", "import", str(csv_file))
    listed = {d["device"]: d["interval_s"]
              for d in json.loads(gateway.cli("devices", "list", "--json").stdout)}
    assert listed == {f"{FAST:08x}": FAST_S, f"{SLOW:08x}": SLOW_S, f"{PLAIN:08x}": None}

    conditions = Conditions(mosquitto)
    conc = ForwarderClient(bytes.fromhex("aa555a0000000202"), "127.0.0.1", udp_port)
    fcnt = {FAST: 0, SLOW: 0, PLAIN: 0}
    sending = threading.Event()
    sending.set()
    quit_meters = threading.Event()

    def send(dev: int) -> None:
        fcnt[dev] += 1
        buf = frame.encode("water_meter", dev, fcnt[dev], {
            "index": fcnt[dev], "profile_end_h": 0, "alarms": 0, "battery": 20,
            "profile": [1]}, KEY)
        conc.push([rxpk(buf, rssi_dbm=-100, lsnr_db=2.0, sf=9, freq_mhz=EU868_CHANNELS_MHZ[0])])

    def meters() -> None:
        # Each meter on its own schedule: FAST every second, SLOW and PLAIN every 3 s.
        tick = 0
        while not quit_meters.is_set():
            if sending.is_set():
                send(FAST)
                if tick % int(SLOW_S / FAST_S) == 0:
                    send(SLOW)
                    send(PLAIN)
                tick += 1
            quit_meters.wait(FAST_S)

    sender = threading.Thread(target=meters, name="meters", daemon=True)
    try:
        gateway.start()
        sender.start()
        wait_for(lambda: all(n >= 3 for n in fcnt.values()), 60, "three frames from each")
        wait_for(lambda: gateway.status()["totals"]["accepted"] >= 9, 30, "frames accepted")
        assert gateway.status()["silence"]["silent"] == 0
        # All three stop together.
        sending.clear()
        wait_for(lambda: any(c["condition"] == "silent" for c in conditions.of(FAST)),
                 30, "the 1-second meter to be silent")
        # The 3-second meter missed no more than one send so far: not silent.
        assert conditions.of(SLOW) == [] and conditions.of(PLAIN) == []
        assert gateway.status()["silence"]["devices"] == [f"{FAST:08x}"]
        wait_for(lambda: any(c["condition"] == "silent" for c in conditions.of(SLOW)),
                 60, "the 3-second meter to be silent")
        fast = next(c for c in conditions.of(FAST) if c["condition"] == "silent")
        slow = next(c for c in conditions.of(SLOW) if c["condition"] == "silent")
        for doc, interval in ((fast, FAST_S), (slow, SLOW_S)):
            assert doc["interval_s"] == interval and doc["reason"] == "overdue"
            assert doc["detail"] == f"no frame for {MISSED} send intervals of {interval:g} s"
            # Overdue (MISSED + 0.5) of its own intervals after its last frame.
            overdue = _seconds(doc["since"]) - _seconds(doc["last_seen"])
            assert abs(overdue - (MISSED + 0.5) * interval) < 0.01, doc
        # The meter on its kind's minute sent with the 3-second one and stopped with it,
        # but is not silent (that takes 3.5 minutes).
        assert conditions.of(PLAIN) == []
        st = gateway.status()["silence"]
        assert st["devices"] == [f"{FAST:08x}", f"{SLOW:08x}"]
        assert st["interval_s"] == {"water_meter": KIND_S, "air_quality": 600.0}
    finally:
        _stop_all(quit_meters, sender, conditions, conc, gateway)

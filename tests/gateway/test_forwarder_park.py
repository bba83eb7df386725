"""A message the broker refuses is parked and never blocks the rest of the spool.

``knute gateway run`` as a real process against a real Mosquitto that bounds
message size: the spool holds readings with one far too large reading (a
frame heard by hundreds of receivers) in the middle. Whatever way the broker
refuses it (MQTT 5: an error PUBACK, or a Maximum Packet Size in CONNACK;
MQTT 3.1.1: it drops the connection), that one row is parked, counted in the
status (socket, ``knute gateway status``, the MQTT status message) and every
other row is delivered. And a broker that is unwell (a cluster node failing
over, closing every connection right after CONNACK) refuses nothing: no row
is parked for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from knute.gateway import message
from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Accepted, Spool
from knute.tools.rig.faults import FaultyLink
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from knute.tools.sim.typical import TYPICAL
from tests.conftest import Broker, free_port
from tests.gateway.test_forwarder import check_delivery, fast_cfg, make_rows

LIMIT = 8192          # bytes the broker takes at most
BIG_RECEIVERS = 400   # about 30 kB of receivers' metadata


def reading(dev: int, fcnt: int, receivers: int = 1) -> Accepted:
    """A real water-meter reading row, heard by ``receivers`` receivers."""
    decoded = {"kind": "water_meter", "kind_id": 1, "device_id": dev, "fcnt": fcnt,
               "tag_len": 4, "values": TYPICAL["water_meter"]}
    name = message.device_name(dev)
    now = time.time()
    heard = [{"source": f"pf-{i}", "gateway_eui": f"{i:016x}", "rssi_dbm": -100,
              "snr_db": 2.5, "freq_hz": 868_100_000, "chan": 0} for i in range(receivers)]
    payload = message.reading_json(decoded, device=name, gateway_id="gw-park",
                                   received_at=now, receivers=heard, source="radio",
                                   site=None)
    return Accepted(device_id=dev, fcnt=fcnt, kind="water_meter",
                    topic=message.topic("knute", "water_meter", name), payload=payload,
                    alarm=False, received_at=now)


@pytest.mark.parametrize("protocol, broker_limit, how", [
    # Mosquitto 2.0 answers with PUBACK reason 0x95 (Packet too large), which MQTT 5
    # does not allow in a PUBACK: paho drops the connection, so the loss rule parks it.
    ("5", f"message_size_limit {LIMIT}", "an invalid PUBACK, the connection dropped"),
    ("5", f"max_packet_size {LIMIT}", "over the broker's Maximum Packet Size (CONNACK)"),
    ("3.1.1", f"max_packet_size {LIMIT}", "the broker drops the connection"),
])
def test_a_refused_message_is_parked_and_the_rest_flows(
        tmp_path: Path, knute_bin: Path, protocol: str, broker_limit: str, how: str) -> None:
    broker = Broker(tmp_path / "broker", "mosquitto", extra_config=broker_limit + "\n")
    (tmp_path / "broker").mkdir()
    broker.start()
    rows = [reading(0x100 + dev, fcnt) for fcnt in range(1, 31) for dev in range(4)]
    big = reading(0x999, 7, receivers=BIG_RECEIVERS)
    assert len(big.payload) > 3 * LIMIT
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=10**8, max_age_s=10**8)
    spool.accept(rows[:50])
    spool.accept([big])
    spool.accept(rows[50:])
    spool.close()
    sock_dir = tempfile.mkdtemp(prefix="kgw", dir="/tmp")       # short unix-socket path
    status_socket = os.path.join(sock_dir, "gw.sock")
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "gw-park"
drain_timeout_s = 5
[status]
socket = "{status_socket}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
protocol = "{protocol}"
max_inflight = 8
[[packet_forwarder]]
name = "concentrator"
listen = "127.0.0.1:{free_port()}"
""")
    listener = Subscriber(broker.host, broker.port, "knute/#")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(knute_bin), "gateway", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def status() -> dict[str, Any]:
        done = subprocess.run([str(knute_bin), "gateway", "status", "--json", "--socket",
                               status_socket], capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    try:
        expected = [f"{r.device_id:08x}:{r.fcnt}" for r in rows]
        wait_for(lambda: listener.ids() >= set(expected), 90,
                 f"every other reading ({how}); log:\n" + log.read_text())
        assert "00000999:7" not in listener.ids()
        st = wait_for(lambda: (lambda s: s if s.get("spool", {}).get("parked") == 1
                               and s["spool"]["depth"] == 0 else {})(status()),
                      30, "the status to show one parked row")
        assert st["forwarder"]["parked_total"] == 1
        text = subprocess.run([str(knute_bin), "gateway", "status", "--socket", status_socket],
                              capture_output=True, text=True, timeout=30).stdout
        assert "parked 1" in text
        # Per device, first copies kept their order around the parked one (a reconnect
        # may send a reading again: same id, at least once).
        last: dict[str, int] = {}
        seen: set[str] = set()
        for rid in [doc["id"] for doc in listener.readings()]:
            if rid in seen:
                continue
            seen.add(rid)
            dev, fcnt = rid.split(":")
            assert int(fcnt) > last.get(dev, 0), f"{rid} after {dev}:{last.get(dev)}"
            last[dev] = int(fcnt)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        final = wait_for(lambda: [s for s in listener.docs("/status") if s["status"] == "offline"],
                         10, "the final status")[-1]
        assert final["counters"]["parked"] == 1
        parked_logs = [line for line in log.read_text().splitlines()
                       if "refused row" in line and "parked" in line]
        assert len(parked_logs) == 1, parked_logs          # logged once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        listener.close()
        broker.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=10**8, max_age_s=10**8)
    try:
        assert spool.stats()["depth"] == 0
        (parked,) = spool.parked()
        assert parked.device_id == 0x999 and parked.fcnt == 7 and parked.reason
    finally:
        spool.close()


def test_a_message_refused_by_an_mqtt5_puback_is_parked_without_a_reconnect(
        tmp_path: Path) -> None:
    """Mosquitto's ACL answers a PUBLISH it refuses with PUBACK 0x87 (Not authorized)."""
    from knute.gateway.config import MqttConfig
    from knute.gateway.forwarder import Forwarder

    (tmp_path / "broker").mkdir()
    acl = tmp_path / "broker" / "acl"
    acl.write_text("pattern write knute/water_meter/+/up\npattern write knute/gateway/#\n"
                   "pattern read #\n")
    broker = Broker(tmp_path / "broker", "mosquitto", extra_config=f"acl_file {acl}\n")
    broker.start()
    rows = [reading(0x100 + dev, fcnt) for fcnt in range(1, 21) for dev in range(3)]
    denied = Accepted(device_id=0x777, fcnt=1, kind="air_quality",
                      topic="knute/air_quality/00000777/up", payload=b'{"id":"00000777:1"}',
                      alarm=False, received_at=time.time())
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=10**8, max_age_s=10**8)
    spool.accept(rows[:30])
    spool.accept([denied])
    spool.accept(rows[30:])
    listener = Subscriber(broker.host, broker.port, "knute/#")
    fwd = Forwarder(spool, MqttConfig(host=broker.host, port=broker.port, protocol="5",
                                      max_inflight=8, backoff_min_s=0.05, backoff_max_s=0.5),
                    gateway_id="gw-acl", status_provider=dict)
    fwd.start()
    try:
        expected = {f"{r.device_id:08x}:{r.fcnt}" for r in rows}
        wait_for(lambda: listener.ids() >= expected, 60, "every allowed reading")
        wait_for(lambda: spool.stats()["depth"] == 0, 30, "an empty queue")
        (parked,) = spool.parked()
        assert parked.device_id == 0x777 and "Not authorized" in parked.reason
        stats = fwd.stats()
        assert stats["parked_total"] == 1 and stats["publish_errors"] == 1
        assert stats["connections"] == 1 and stats["reconnects"] == 0
        assert len(listener.readings()) == len(rows)   # nothing sent twice either
    finally:
        fwd.stop(drain_timeout_s=2)
        listener.close()
        spool.close()
        broker.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_broker_failing_over_parks_nothing(mosquitto: Broker, tmp_path: Path,
                                             protocol: str) -> None:
    """Every connection is dropped right after CONNACK, at the gateway's first PUBLISH
    (its status), many more times than ``park_after_losses``: that is the broker's
    trouble, not a refusal, so when the broker recovers every row arrives, in order,
    and nothing is parked."""
    rows = make_rows(4, 20)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=10**8, max_age_s=10**8)
    spool.accept(rows)
    link = FaultyLink((mosquitto.host, mosquitto.port))
    link.set_mode("flap")
    collector = Subscriber(mosquitto.host, mosquitto.port, "knute/#")
    cfg = fast_cfg(link.port, protocol=protocol, max_inflight=8, park_after_losses=3)
    fwd = Forwarder(spool, cfg, gateway_id="gw-flap", status_provider=dict)
    fwd.start()
    try:
        wait_for(lambda: link.flaps >= 5 * cfg.park_after_losses, 60,
                 "the forwarder to meet the failing broker again and again")
        assert spool.parked() == []
        link.set_mode("relay")
        wait_for(lambda: spool.stats()["depth"] == 0, 60, "every row delivered")
        wait_for(lambda: len({m.doc()["id"] for m in collector.messages("/up")}) == len(rows),
                 30, "every reading at the subscriber")
        check_delivery(collector, rows)
        assert spool.parked() == []
        assert fwd.stats()["parked_total"] == 0
    finally:
        fwd.stop(drain_timeout_s=2)
        collector.close()
        link.close()
        spool.close()

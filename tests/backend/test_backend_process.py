"""``knute backend run`` as a real process against a real Mosquitto.

Readings published by a client land in the store as hourly series; a leak
raises a retained alert on ``knute/alert/...``; a reading published while the
backend is stopped is delivered when it comes back (persistent session);
bad input is counted and never stops the process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from knute.tools.rig.broker import Broker
from knute.tools.rig.wait import wait_for
from tests.backend.factory import HOUR_S, T0, reading, topic

ROOT = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs" / "schema" / "alert.schema.json").read_text()))


class Client:
    """A test client that publishes readings and collects alert messages."""

    def __init__(self, broker: Broker) -> None:
        self.alerts: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
        self.mqtt.on_message = self._on_message
        self.mqtt.connect(broker.host, broker.port)
        self.mqtt.subscribe("knute/alert/#", qos=1)
        self.mqtt.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.alerts[msg.topic] = json.loads(msg.payload)

    def send(self, doc: dict[str, Any] | bytes, on: str | None = None) -> None:
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        target = on or topic(doc) if isinstance(doc, dict) else str(on)
        self.mqtt.publish(target, payload, qos=1).wait_for_publish(timeout=10)

    def alert(self, key: str) -> dict[str, Any]:
        """The last message on ``key``, empty until one arrived."""
        with self.lock:
            return self.alerts.get(key, {})

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def broker(mqtt_broker_factory: Callable[..., Broker]) -> Broker:
    return mqtt_broker_factory("mosquitto")


@pytest.fixture
def client(broker: Broker) -> Iterator[Client]:
    c = Client(broker)
    yield c
    c.close()


def write_config(tmp_path: Path, broker: Broker, share_group: str = "",
                 client_id: str = "backend-test") -> Path:
    path = tmp_path / f"{client_id}.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
share_group = "{share_group}"
[store]
path = "backend.sqlite"
[water]
evaluate_every_s = 0.2
[[district]]
name = "sentrum"
inflow = ["1000a001"]
households = ["00000001"]
""")
    return path


class Backend:
    """One ``knute backend run`` process."""

    def __init__(self, knute_bin: Path, config: Path) -> None:
        self.log = config.parent / f"{config.stem}.log"
        self.start = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([str(knute_bin), "backend", "run", "--config", str(config)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("ab"), cwd=config.parent)
        wait_for(lambda: "subscribed to" in self.text() or self.dead(), 60,
                 "the backend to subscribe")
        assert not self.dead(), self.text()

    def text(self) -> str:
        """What this process logged (the file is shared across restarts)."""
        return self.log.read_bytes()[self.start:].decode(errors="replace")

    def dead(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def hours(db: Path, device: str) -> list[tuple[int, float, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return [(int(h), float(v), str(q)) for h, v, q in con.execute(
            "SELECT hour, litres, quality FROM hours WHERE device=? ORDER BY hour", (device,))]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def counters(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    try:
        return {str(n): int(v) for n, v in con.execute("SELECT name, value FROM counters")}
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def test_readings_become_hours_and_a_leak_a_retained_alert(
        tmp_path: Path, broker: Broker, client: Client, knute_bin: Path) -> None:
    backend = Backend(knute_bin, write_config(tmp_path, broker, share_group="backend"))
    db = tmp_path / "backend.sqlite"
    try:
        client.send(b"garbage", on="knute/water_meter/00000001/up")
        for i in range(5):                        # 30 hours of 4 L/h: continuous flow
            doc = reading("00000001", i + 1, T0 + (i + 1) * 6 * HOUR_S, [4] * 6, 24 * (i + 1))
            client.send(doc)
            client.send(doc)                      # the duplicate a lost PUBACK causes
        wait_for(lambda: len(hours(db, "00000001")) == 30, 60, "30 stored hours")
        assert sum(v for _, v, _ in hours(db, "00000001")) == 120
        alert = wait_for(lambda: client.alert("knute/alert/continuous_flow/00000001"), 60,
                         "the continuous-flow alert")
        ALERT_SCHEMA.validate(alert)
        assert alert["state"] == "open" and len(alert["evidence"]) == 24
        wait_for(lambda: counters(db) == {"bad": 1, "duplicate": 5, "stored": 5}, 60,
                 "every message counted")
    finally:
        assert backend.stop() == 0
    log = backend.text()
    assert "bad reading on knute/water_meter/00000001/up: not JSON" in log
    final = json.loads(log.strip().splitlines()[-1].split("counters ", 1)[1])
    assert final == {"bad": 1, "duplicate": 5, "stored": 5}
    status = subprocess.run([str(knute_bin), "backend", "status", "--config",
                             str(tmp_path / "backend-test.toml"), "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(status.stdout)
    assert report["readings"] == 5 and report["counters"]["duplicate"] == 5
    assert [a["alert"] for a in report["open_alerts"]] == ["continuous_flow"]
    assert report["unheard_district_meters"] == ["1000a001"]
    # Retained: a client that subscribes later still learns the open alert.
    late = Client(broker)
    try:
        again = wait_for(lambda: late.alert("knute/alert/continuous_flow/00000001"), 30,
                         "the retained alert")
        assert again["opened_at"] == alert["opened_at"]
    finally:
        late.close()


def test_readings_sent_while_the_backend_is_down_arrive_when_it_returns(
        tmp_path: Path, broker: Broker, client: Client, knute_bin: Path) -> None:
    config = write_config(tmp_path, broker)
    db = tmp_path / "backend.sqlite"
    backend = Backend(knute_bin, config)
    client.send(reading("00000001", 1, T0 + 6 * HOUR_S, [1] * 6, 6))
    wait_for(lambda: len(hours(db, "00000001")) == 6, 60, "the first six hours")
    assert backend.stop() == 0
    client.send(reading("00000001", 2, T0 + 12 * HOUR_S, [2] * 6, 18))   # queued by the broker
    backend = Backend(knute_bin, config)
    try:
        assert "session present: True" in backend.text()
        wait_for(lambda: len(hours(db, "00000001")) == 12, 60, "the queued reading's hours")
        assert [v for _, v, _ in hours(db, "00000001")] == [1] * 6 + [2] * 6
    finally:
        assert backend.stop() == 0


def readings_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_a_backend_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
        tmp_path: Path, broker: Broker, client: Client, knute_bin: Path) -> None:
    # Acknowledged only after the commit: what the kill interrupts is delivered
    # again by the broker's session, and the store's key on id absorbs the repeat.
    config = write_config(tmp_path, broker)
    db = tmp_path / "backend.sqlite"
    backend = Backend(knute_bin, config)
    meters = [f"0000100{m}" for m in range(4)]
    for k in range(10):
        for device in meters:
            client.send(reading(device, k + 1, T0 + (k + 1) * 6 * HOUR_S, [k + 1] * 6,
                                6 * sum(range(1, k + 2))))
    wait_for(lambda: readings_count(db) >= 5, 60, "the first readings stored")
    backend.proc.kill()
    assert backend.proc.wait(timeout=30) == -signal.SIGKILL
    # Usually part of the stream is still unstored here (the kill lands mid-stream);
    # if the backend was quicker, the restart must still add nothing.
    assert readings_count(db) >= 5
    backend = Backend(knute_bin, config)
    try:
        wait_for(lambda: readings_count(db) == 40, 60, "every reading stored")
        for device in meters:
            litres = [v for _, v, _ in hours(db, device)]
            assert len(litres) == 60 and sum(litres) == 6 * sum(range(1, 11)), device
    finally:
        assert backend.stop() == 0


def test_two_instances_in_a_shared_subscription_group_split_the_readings(
        tmp_path: Path, broker: Broker, client: Client, knute_bin: Path) -> None:
    # `$share/backend/knute/+/+/up`: the broker hands each reading to one member;
    # both write the same store (SQLite in WAL mode on one machine).
    backends = [Backend(knute_bin, write_config(tmp_path, broker, "backend", f"backend-{n}"))
                for n in (1, 2)]
    db = tmp_path / "backend.sqlite"
    try:
        for k in range(6):
            for m in range(4):
                client.send(reading(f"0000200{m}", k + 1, T0 + (k + 1) * 6 * HOUR_S, [2] * 6,
                                    12 * (k + 1)))
        wait_for(lambda: readings_count(db) == 24, 60, "every reading stored")
    finally:
        statuses = [b.stop() for b in backends]
    assert statuses == [0, 0]
    handled = [json.loads(b.text().strip().splitlines()[-1].split("handled ", 1)[1]
                          .split("; counters", 1)[0]) for b in backends]
    assert all(h.get("stored", 0) + h.get("late", 0) > 0 for h in handled), handled
    assert sum(sum(h.values()) for h in handled) == 24
    for m in range(4):
        assert sum(v for _, v, _ in hours(db, f"0000200{m}")) == 72

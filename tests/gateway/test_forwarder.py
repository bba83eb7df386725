"""gateway.forwarder against a real Mosquitto (and one scripted broker for a silent peer).

What these tests hold the forwarder to:
- every spooled row reaches a subscriber; a row leaves the spool only on PUBACK;
- per device, readings arrive in frame-counter order (first copies), and a
  duplicate is always the same message (same id, same bytes);
- the broker going away mid-stream, or the forwarder process being killed -9
  and restarted, loses nothing;
- the retained status, its will, and the published JSON match docs/schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.gateway import message
from knute.gateway.config import MqttConfig, TlsSettings
from knute.gateway.errors import KnuteError
from knute.gateway.forwarder import Forwarder
from knute.gateway.link import Backoff
from knute.gateway.spool import Accepted, Spool
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from knute.tools.sim.typical import TYPICAL
from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
READING = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/reading.schema.json").read_text()))
STATUS = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/status.schema.json").read_text()))
WAIT_S = 60.0


# -- helpers ---------------------------------------------------------------------------

def make_rows(devices: int, per_device: int, first_fcnt: int = 0) -> list[Accepted]:
    """Real reading JSON for ``devices`` devices, interleaved, counters ascending."""
    out = []
    for fcnt in range(first_fcnt, first_fcnt + per_device):
        for dev in range(1, devices + 1):
            kind = "water_meter" if dev % 2 else "air_quality"
            decoded = {"kind": kind, "kind_id": 1 if kind == "water_meter" else 2,
                       "device_id": dev, "fcnt": fcnt, "tag_len": 4, "values": TYPICAL[kind]}
            name = message.device_name(dev)
            now = time.time()
            payload = message.reading_json(
                decoded, device=name, gateway_id="gw-test", received_at=now,
                receivers=[{"source": "lora0", "rssi_dbm": -90, "snr_db": 5.0}],
                source="radio", site=None)
            out.append(Accepted(device_id=dev, fcnt=fcnt, kind=kind,
                                topic=message.topic("knute", kind, name), payload=payload,
                                alarm=False, received_at=now))
    return out


def statuses(sub: Subscriber) -> list[tuple[dict[str, Any], bool]]:
    """The gateway status messages so far, with their retain flags."""
    return [(m.doc(), m.retain) for m in sub.messages("/status")]


def check_delivery(collector: Subscriber, rows: list[Accepted]) -> int:
    """All rows arrived; per device in order (first copies); duplicates identical.

    Returns the number of duplicates seen.
    """
    expected = {f"{r.device_id:08x}:{r.fcnt}" for r in rows}
    raw = [m.payload for m in collector.messages("/up")]
    by_id: dict[str, bytes] = {}
    last: dict[str, int] = {}
    duplicates = 0
    for payload in raw:
        doc = json.loads(payload)
        if doc["id"] in by_id:
            assert by_id[doc["id"]] == payload, "a duplicate differs from the original"
            duplicates += 1
            continue
        by_id[doc["id"]] = payload
        assert doc["fcnt"] > last.get(doc["device"], -1), \
            f"{doc['device']}: fcnt {doc['fcnt']} after {last.get(doc['device'])}"
        last[doc["device"]] = doc["fcnt"]
    missing = expected - set(by_id)
    assert not missing, f"{len(missing)} readings never arrived, e.g. {sorted(missing)[:5]}"
    return duplicates


def fast_cfg(port: int, **kw: Any) -> MqttConfig:
    """A config with short timeouts for tests."""
    args: dict[str, Any] = {"host": "127.0.0.1", "port": port, "backoff_min_s": 0.05,
                            "backoff_max_s": 0.5, "connect_timeout_s": 2.0,
                            "status_interval_s": 0.5, "max_inflight": 16}
    args.update(kw)
    return MqttConfig(**args)


# -- tests -----------------------------------------------------------------------------

def test_backoff_is_capped_exponential_with_jitter() -> None:
    class Fixed(random.Random):
        """Draws the given fractions of each range, in turn."""

        def __init__(self, fractions: list[float]) -> None:
            super().__init__()
            self.fractions = iter(fractions)

        def uniform(self, a: float, b: float) -> float:
            return a + (b - a) * next(self.fractions)

    backoff = Backoff(0.5, 3.0, Fixed([0.0, 1.0, 0.5, 0.0, 1.0, 1.0, 0.25]))
    delays = [backoff.next() for _ in range(6)]
    assert delays == [0.25, 1.0, 1.5, 1.5, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == pytest.approx(0.3125)


@pytest.mark.parametrize("bad", [
    {"protocol": "3"}, {"qos": 0}, {"max_inflight": 0}, {"tls": TlsSettings(cert="c.pem")},
    {"prefix": "city/#"}, {"prefix": "/city"}, {"prefix": ""}])
def test_config_is_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(KnuteError):
        MqttConfig(**bad)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_delivers_in_order_with_retained_status_matching_schemas(
        mosquitto: Broker, tmp_path: Path, protocol: str) -> None:
    collector = Subscriber(mosquitto.host, mosquitto.port, "knute/#")
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    rows = make_rows(devices=5, per_device=40)
    spool.accept(rows[:100])
    fwd = Forwarder(spool, fast_cfg(mosquitto.port, protocol=protocol), gateway_id="gw-test",
                    status_provider=lambda: {"received": 7, "accepted": 5, "rejected": 2,
                                             "rejected_by_reason": {"frame_tag": 2}})
    fwd.start()
    try:
        spool.accept(rows[100:])
        fwd.wake()
        wait_for(lambda: len(collector.ids()) == len(rows))
        wait_for(lambda: spool.stats()["depth"] == 0)
        assert check_delivery(collector, rows) == 0
        assert fwd.state == "open"
        for doc in collector.readings():
            READING.validate(doc)
        wait_for(lambda: len(statuses(collector)) >= 2)   # periodic republish
        # A late subscriber gets the retained online status at once.
        late = Subscriber(mosquitto.host, mosquitto.port, "knute/gateway/+/status")
        wait_for(lambda: bool(statuses(late)))
        doc, retained = statuses(late)[0]
        late.close()
        assert retained and doc["status"] == "online" and doc["gateway"] == "gw-test"
        assert doc["counters"]["rejected_by_reason"] == {"frame_tag": 2}
        assert doc["counters"]["spooled"] == len(rows)
        for status, _retained in statuses(collector):
            STATUS.validate(status)
    finally:
        fwd.stop(drain_timeout_s=5)
    assert fwd.state == "stopped"
    assert fwd.stats()["forwarded_total"] == len(rows)
    wait_for(lambda: statuses(collector)[-1][0]["status"] == "offline")
    final = statuses(collector)[-1][0]
    STATUS.validate(final)
    assert final["reason"] == "shutdown" and final["counters"]["forwarded"] == len(rows)
    collector.close()
    spool.close()


def test_broker_outage_mid_stream_loses_nothing(tuned_broker: Broker, tmp_path: Path) -> None:
    collector = Subscriber(tuned_broker.host, tuned_broker.port, "knute/#",
                           client_id="outage-sub", clean_session=False)
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    rows = make_rows(devices=6, per_device=250)
    fwd = Forwarder(spool, fast_cfg(tuned_broker.port), gateway_id="gw-test",
                    status_provider=dict)
    fwd.start()
    try:
        third = len(rows) // 3
        for start in range(0, third, 50):
            spool.accept(rows[start:start + 50])
            fwd.wake()
            time.sleep(0.002)
        wait_for(lambda: len(collector.ids()) > 0)
        tuned_broker.stop()                       # outage with rows in flight
        wait_for(lambda: fwd.state != "open")
        for start in range(third, 2 * third, 50):  # the gateway goes on accepting
            spool.accept(rows[start:start + 50])
            fwd.wake()
        assert spool.stats()["depth"] >= third
        tuned_broker.start()
        for start in range(2 * third, len(rows), 50):
            spool.accept(rows[start:start + 50])
            fwd.wake()
        wait_for(lambda: spool.stats()["depth"] == 0)
        wait_for(lambda: collector.ids() >= {f"{r.device_id:08x}:{r.fcnt}"
                                                      for r in rows})
        check_delivery(collector, rows)
        assert fwd.stats()["reconnects"] >= 1
    finally:
        fwd.stop(drain_timeout_s=2)
        collector.close()
        spool.close()


FORWARDER_CHILD = """
import logging, signal, sys, threading
from knute.gateway.config import MqttConfig
from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Spool
logging.basicConfig(level=logging.INFO)
spool = Spool(sys.argv[1], max_bytes=10**9, max_age_s=10**9)
cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[2]), max_inflight=32,
                 backoff_min_s=0.05, backoff_max_s=0.5, status_interval_s=0.5)
fwd = Forwarder(spool, cfg, gateway_id="gw-kill", status_provider=dict)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
fwd.start()
print("started", flush=True)
done.wait()
fwd.stop(5)
spool.close()
"""


def start_forwarder_process(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", FORWARDER_CHILD, str(db), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    return proc


def stop_forwarder_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the forwarder child, which must drain and exit 0."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def reap_forwarder_process(proc: subprocess.Popen[bytes]) -> None:
    """The forwarder child killed if it still runs, its pipe closed (a test's cleanup)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def freeze(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP ``proc`` and return once it is stopped (the signal lands asynchronously)."""
    os.kill(proc.pid, signal.SIGSTOP)
    stat = Path(f"/proc/{proc.pid}/stat")
    # The state is the field after the command's closing parenthesis: T when stopped.
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 10,
             "the forwarder stopped")


def spool_depth(db: Path) -> int:
    """Rows in the spool file now, read as another process would: read-only, and in WAL
    mode never blocked by the writer (which may be running, or stopped)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        return int(con.execute("SELECT count(*) FROM rows").fetchone()[0])


def kill_mid_drain(proc: subprocess.Popen[bytes], db: Path, at_most: int) -> int:
    """SIGKILL the forwarder child once its spool holds at most ``at_most`` rows, and
    return how many it held then. Each look is taken with the child stopped (SIGSTOP),
    so the depth seen is the depth at the kill, however late a loaded machine lets the
    test act on it."""
    def down_to_limit() -> list[int]:      # [rows left] once at most at_most, else []
        freeze(proc)
        left = spool_depth(db)
        if left > at_most:
            os.kill(proc.pid, signal.SIGCONT)
            return []
        return [left]

    [left] = wait_for(down_to_limit, what=f"the spool down to {at_most} rows")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return left


def test_forwarder_killed_mid_stream_and_restarted(tuned_broker: Broker,
                                                  tmp_path: Path) -> None:
    mosquitto = tuned_broker
    db = tmp_path / "s.db"
    # Enough rows that the kill lands mid-stream on a fast machine too: the forwarder
    # drains some 60,000 rows a second, and 4,000 had all gone before one kill landed.
    rows = make_rows(devices=4, per_device=5000)
    spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
    for start in range(0, len(rows), 256):
        spool.accept(rows[start:start + 256])
    spool.close()
    collector = Subscriber(mosquitto.host, mosquitto.port, "knute/#")
    proc = start_forwarder_process(db, mosquitto.port)
    try:
        # The kill lands once a tenth of the rows is acknowledged (gone from the spool).
        # (Waiting for a tenth at the subscriber was not enough: under load it lagged
        # the broker so far that every row had gone before the kill.)
        left_at_kill = kill_mid_drain(proc, db, len(rows) * 9 // 10)
        # Mid-stream: the spool still held rows when the forwarder died.
        assert left_at_kill > 0, "everything was delivered before the kill"
        assert spool_depth(db) == left_at_kill
        # The broker publishes the will: the gateway is offline.
        wait_for(lambda: any(s["status"] == "offline" and s["reason"] ==
                                      "connection lost" for s, _r in statuses(collector)))
        proc = start_forwarder_process(db, mosquitto.port)
        wait_for(lambda: len(collector.ids()) == len(rows))
        check_delivery(collector, rows)
        stop_forwarder_process(proc)
    finally:
        reap_forwarder_process(proc)
        collector.close()
    spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
    assert spool.stats()["depth"] == 0
    spool.close()
    for status, _retained in statuses(collector):
        STATUS.validate(status)
    assert statuses(collector)[-1][0]["status"] == "offline"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_supervisor_restarts_a_dead_or_stalled_worker(mosquitto: Broker,
                                                      tmp_path: Path) -> None:
    calls = [0]

    def provider() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 2:
            raise SystemExit("the worker thread dies here")
        if calls[0] == 4:
            time.sleep(1.5)                       # the worker stalls here
        return {}

    collector = Subscriber(mosquitto.host, mosquitto.port, "knute/#")
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    fwd = Forwarder(spool, fast_cfg(mosquitto.port, status_interval_s=0.2),
                    gateway_id="gw-test", status_provider=provider, stall_timeout_s=0.6)
    fwd.start()
    rows = make_rows(devices=3, per_device=100)
    try:
        for start in range(0, len(rows), 20):
            spool.accept(rows[start:start + 20])
            fwd.wake()
            time.sleep(0.02)
        wait_for(lambda: fwd.stats()["supervisor_restarts"] >= 2)
        wait_for(lambda: spool.stats()["depth"] == 0)
        wait_for(lambda: len(collector.ids()) == len(rows))
        check_delivery(collector, rows)
        wait_for(lambda: fwd.state == "open")
    finally:
        fwd.stop(drain_timeout_s=2)
        collector.close()
        spool.close()


class SilentBroker:
    """A scripted MQTT server: CONNACK to every CONNECT, then never a PUBACK."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.connects = 0
        self.publishes = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        conns: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _addr = self.server.accept()
                conn.settimeout(0.05)
                conns.append(conn)
            except TimeoutError:
                pass
            for conn in list(conns):
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    conns.remove(conn)
                    continue
                if not data:
                    conns.remove(conn)
                    continue
                if data[0] == 0x10:
                    self.connects += 1
                    conn.sendall(b"\x20\x02\x00\x00")
                self.publishes += sum(1 for b in data if b == 0x32)   # rough count
        for conn in conns:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.server.close()


def test_no_puback_means_the_row_stays_and_the_link_is_renewed(tmp_path: Path) -> None:
    broker = SilentBroker()
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    rows = make_rows(devices=2, per_device=5)
    spool.accept(rows)
    fwd = Forwarder(spool, fast_cfg(broker.port, ack_timeout_s=0.3, status_interval_s=60),
                    gateway_id="gw-test", status_provider=dict)
    fwd.start()
    try:
        wait_for(lambda: fwd.stats()["stale_connections"] >= 2)
        assert broker.connects >= 2
        assert spool.stats()["depth"] == len(rows)      # nothing left without a PUBACK
        assert fwd.stats()["forwarded_total"] == 0
    finally:
        fwd.stop(drain_timeout_s=0.5)
        broker.close()
    assert spool.stats()["depth"] == len(rows)
    spool.close()

"""``knute bench reliability``: fault injection on the whole path, with figures.

Each case runs real processes (the gateway as ``knute gateway run``, a real
Mosquitto, a simulated fleet sending real encrypted frames over a pty and the
UDP packet-forwarder protocol, the firmware on the MicroPython unix port) and
injects one kind of fault. Every case reports one row:

    case, runs, sent, accepted, delivered, lost, duplicates, crashes

- ``sent``: frames (or inputs) put on the gateway's links;
- ``accepted``: frames the gateway committed to its spool (the spool's
  persisted ``accepted_total``, which survives kill -9);
- ``delivered``: distinct reading ids the backend subscriber received;
- ``lost``: accepted - delivered - evicted (evictions are counted and reported
  by the gateway; a case that evicts says so);
- ``duplicates``: deliveries beyond the first of an id (always with identical
  bytes, or the case fails);
- ``crashes``: gateway processes that died by themselves, uncaught exceptions,
  or fuzz inputs that raised anything but the protocol's FrameError.

The cases double as the reliability test suite: tests/reliability/ calls the
same functions with short parameters (``make test``) and long ones
(``pytest -m slow``, ``make reliability``). docs/reliability.md describes the
method and shows the latest table.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import KnuteError
from tools import bench_udp_flood

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "rel"
WAIT_S = 120.0
DESIGN_RATE_FPS = 20.0           # frames/s the 10-minute outage is scaled by (docs/reliability.md)
ROW_KEYS = ("case", "runs", "sent", "accepted", "delivered", "lost", "duplicates", "crashes")


# ---------------------------------------------------------------- results


@dataclass
class CaseResult:
    """One row of the table, plus what went wrong (empty when the case passed)."""

    case: str
    runs: int = 0
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    crashes: int = 0
    evicted: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing accepted was lost, nothing crashed and no check failed."""
        return not self.problems and self.lost == 0 and self.crashes == 0

    def row(self) -> dict[str, Any]:
        """The JSON row: the table's columns, then evicted, notes and problems."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ROW_KEYS}
        out["evicted"] = self.evicted
        out["notes"] = dict(self.notes)
        out["problems"] = list(self.problems)
        return out


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``cond`` until it is truthy; KnuteError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise KnuteError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- a faulty TCP link


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_mqtt_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT control packet: (first byte, body). ConnectionError at EOF."""
    first = _read_exact(sock, 1)[0]
    length = 0
    shift = 0
    for _ in range(4):
        byte = _read_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, _read_exact(sock, length) if length else b""


class FaultyLink:
    """A TCP relay between the gateway and the broker that misbehaves on request.

    Modes: ``relay`` (pass bytes both ways), ``down`` (accept, then reset at
    once: the broker is gone), ``blackhole`` (answer CONNECT with CONNACK and
    PINGREQ with PINGRESP, swallow every PUBLISH: a broker that never sends
    PUBACK), ``storm`` (relay, but drop each connection after
    ``storm_s`` = (lo, hi) seconds). ``set_mode`` drops the current
    connections, so the gateway meets the new behaviour at its next connect.
    """

    def __init__(self, target: tuple[str, int], *, storm_s: tuple[float, float] = (0.5, 3.0),
                 seed: int = 1) -> None:
        self.target = target
        self.mode = "relay"
        self.storm_s = storm_s
        self.connections = 0
        self.swallowed = 0
        self._rng = random.Random(seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="faulty-link", daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """Switch behaviour and drop every open connection."""
        if mode not in ("relay", "down", "blackhole", "storm"):
            raise ValueError(mode)
        self.mode = mode
        self.drop()

    def drop(self) -> None:
        """Reset every open connection."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _reset(conn)

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._closed = True
        self.drop()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.extend(socks)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            mode = self.mode
            if mode == "down":
                _reset(conn)
                continue
            if mode == "blackhole":
                self._track(conn)
                threading.Thread(target=self._blackhole, args=(conn,), daemon=True).start()
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
                up.settimeout(None)
            except OSError:
                _reset(conn)
                continue
            self._track(conn, up)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
            if mode == "storm":
                life = self._rng.uniform(*self.storm_s)
                timer = threading.Timer(life, _reset_all, args=(conn, up))
                timer.daemon = True
                timer.start()

    def _blackhole(self, conn: socket.socket) -> None:
        try:
            while True:
                first, body = read_mqtt_packet(conn)
                ptype = first >> 4
                if ptype == 1:                       # CONNECT
                    level = body[6] if len(body) > 6 else 4
                    conn.sendall(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                elif ptype == 12:                    # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif ptype == 3:                     # PUBLISH: never acknowledged
                    self.swallowed += 1
                elif ptype == 14:                    # DISCONNECT
                    break
        except (OSError, ConnectionError, IndexError):
            pass
        _reset(conn)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _reset_all(*socks: socket.socket) -> None:
    """Reset several connections."""
    for sock in socks:
        _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees the connection reset, as after a crash."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()


# ---------------------------------------------------------------- the backend


class Backend:
    """The MQTT subscriber standing for the city's backend (QoS 1, own connection)."""

    def __init__(self, host: str, port: int, *, prefix: str = PREFIX,
                 tls_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.payloads: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}
        self.order: dict[str, list[int]] = {}
        self.mismatched: list[str] = []
        self._lock = threading.Lock()
        self._client: Any = None
        self._subscribed = threading.Event()

    def connect(self) -> None:
        """Connect and subscribe; returns once the SUBACK is in."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._subscribed.clear()
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"rel-backend-{os.getpid()}-{id(self)}")
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.connect(self.host, self.port, 30)
        client.subscribe(f"{self.prefix}/+/+/up", qos=1)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(15):
            raise KnuteError("backend subscriber: no SUBACK")

    def disconnect(self) -> None:
        """Stop the client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
            rid = str(doc["id"])
            device = str(doc["device"])
            fcnt = int(doc["fcnt"])
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.mismatched.append(f"unreadable message on {msg.topic}")
            return
        with self._lock:
            known = self.payloads.get(rid)
            if known is None:
                self.payloads[rid] = bytes(msg.payload)
                self.counts[rid] = 1
                self.order.setdefault(device, []).append(fcnt)
            else:
                self.counts[rid] += 1
                if known != msg.payload:
                    self.mismatched.append(rid)

    def ids(self) -> set[str]:
        """Distinct reading ids received."""
        with self._lock:
            return set(self.payloads)

    def delivered(self) -> int:
        """How many distinct ids arrived."""
        with self._lock:
            return len(self.payloads)

    def duplicates(self) -> int:
        """Deliveries beyond the first of each id."""
        with self._lock:
            return sum(n - 1 for n in self.counts.values())

    def out_of_order(self) -> list[str]:
        """Devices whose first deliveries are not in frame-counter order."""
        with self._lock:
            return [d for d, fc in self.order.items()
                    if any(b <= a for a, b in itertools.pairwise(fc))]

    def quiet(self, for_s: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until nothing new arrived for ``for_s``."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            with self._lock:
                now = sum(self.counts.values())
            if now == last:
                return
            last = now
            time.sleep(for_s)


# ---------------------------------------------------------------- the gateway process


def short_dir(prefix: str) -> str:
    """A directory with a short path (unix socket paths are limited to 108 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class GatewayProc:
    """One gateway installation run as ``knute gateway run`` (a real process).

    ``devices``: (device_id, kind, key) registered through the registry's CSV
    import; ``serial_url`` and ``udp_port`` choose the sources.
    """

    def __init__(self, root: Path, mqtt_port: int, devices: Sequence[tuple[int, str, bytes]],
                 *, serial_url: str | None = None, udp_port: int | None = None,
                 spool_path: str | None = None, spool_max_mb: float = 64.0,
                 fsync: str = "normal", mqtt_extra: str = "", mqtt_host: str = "127.0.0.1",
                 log_level: str = "info", log_json: bool = False) -> None:
        from gateway.registry import Registry, csv_header, csv_line

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sock_dir = short_dir("krel")
        self.status_socket = os.path.join(self.sock_dir, "gw.sock")
        self.config = root / "gateway.toml"
        self.log = root / "gateway.log"
        self.spool_path = spool_path or str(root / "spool.db")
        self.registry_path = str(root / "registry.db")
        self.log_json = log_json
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.crashes = 0
        self.kills = 0
        sources = ""
        if serial_url is not None:
            sources += (f'[[serial]]\nname = "serial"\nurl = "{serial_url}"\n'
                        "reopen_min_s = 0.05\nreopen_max_s = 0.5\n")
        if udp_port is not None:
            sources += f'[[packet_forwarder]]\nname = "udp"\nlisten = "127.0.0.1:{udp_port}"\n'
        self.config.write_text(f"""
[gateway]
id = "rel"
data_dir = "{root}"
registry = "registry.db"
log_level = "{log_level}"
drain_timeout_s = 2
[spool]
path = "{self.spool_path}"
max_mb = {spool_max_mb}
fsync = "{fsync}"
[status]
socket = "{self.status_socket}"
[mqtt]
host = "{mqtt_host}"
port = {mqtt_port}
prefix = "{PREFIX}"
keepalive = 5
{mqtt_extra}
{sources}""")
        if devices:
            reg = Registry(self.registry_path)
            try:
                text = csv_header(with_location=False) + "".join(
                    csv_line(d, kind, key) for d, kind, key in devices)
                reg.import_csv(text)
            finally:
                reg.close()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait_sources: bool = True) -> None:
        """Start the daemon; returns when its status socket answers (and sources are open)."""
        knute = str(Path(sys.executable).parent / "knute")
        cmd = [knute, "gateway", "run", "--config", str(self.config)]
        if self.log_json:
            cmd.append("--log-json")
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(self.root))
        self.starts += 1

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise KnuteError(f"gateway exited with {self.proc.returncode} at start-up; "
                                 f"log {self.log}:\n{self.log_tail()}")
            try:
                st = self.status()
            except (OSError, ValueError):
                return False
            if not wait_sources:
                return True
            return all(s.get("state") == "open" for s in st.get("sources", {}).values())

        try:
            wait_for(ready, 60, "the gateway to start")
        except KnuteError as exc:
            try:
                sources = {name: src.get("state") for name, src in
                           self.status().get("sources", {}).items()}
            except (OSError, ValueError):
                sources = {}
            raise KnuteError(f"{exc}; sources {sources}; log {self.log}:\n"
                             f"{self.log_tail()}") from None

    def check(self) -> bool:
        """False (and one crash counted) if the process died without being told to."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes += 1
            self.proc = None
            return False
        return True

    def status(self) -> dict[str, Any]:
        """The live status over the unix socket."""
        from gateway.status import request

        return request(self.status_socket, {"cmd": "status"}, timeout=5.0)

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None:
            self.check()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=15)
            self.proc = None
            self.kills += 1

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc is None:
            return -1
        if self.proc.poll() is not None:
            self.crashes += 1
            code = self.proc.returncode
            self.proc = None
            return int(code)
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            code = -9
        self.proc = None
        return int(code)

    def log_text(self) -> str:
        """Everything the gateway logged (every start)."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` log lines."""
        return "\n".join(self.log_text().splitlines()[-n:])

    def spool_meta(self) -> dict[str, int]:
        """The spool's persisted counters, read from the file (gateway stopped or running)."""
        db = sqlite3.connect(self.spool_path, timeout=10)
        try:
            return {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        finally:
            db.close()

    def close(self) -> None:
        """Kill a daemon still running and remove the socket directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None
        shutil.rmtree(self.sock_dir, ignore_errors=True)


def spool_problems(path: str) -> list[str]:
    """Consistency checks of a spool file after a crash (empty list: consistent).

    integrity_check passes; every row's counter is at or below its device's
    replay counter (rows and counters were committed together); and the
    persisted counters add up: accepted - acked - evicted == rows.
    """
    problems: list[str] = []
    db = sqlite3.connect(path, timeout=10)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"integrity_check: {check}")
        replay = dict(db.execute("SELECT device_id, fcnt FROM replay").fetchall())
        for dev, top in db.execute("SELECT device_id, max(fcnt) FROM rows GROUP BY device_id"):
            if dev not in replay or replay[dev] < top:
                problems.append(f"device {dev:08x}: row fcnt {top} above replay counter "
                                f"{replay.get(dev)}")
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        rows = int(db.execute("SELECT count(*) FROM rows").fetchone()[0])
        balance = meta["accepted_total"] - meta["acked_total"] - meta["evicted_total"]
        if balance != rows:
            problems.append(f"counters say {balance} rows, the table holds {rows}")
    finally:
        db.close()
    return problems


def key_leaks(texts: dict[str, str], secrets: Sequence[bytes | str]) -> list[str]:
    """Which secrets (keys as hex and base64, passwords) appear in which texts."""
    found: list[str] = []
    needles: list[str] = []
    for secret in secrets:
        if isinstance(secret, bytes):
            needles += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()]
        else:
            needles.append(secret)
    for name, text in texts.items():
        for needle in needles:
            if needle and needle in text:
                found.append(f"{name} contains a secret ({needle[:6]}...)")
                break
    return found


# ---------------------------------------------------------------- the fleet on the links


class FleetDriver:
    """Sends a seeded fleet's frames to the gateway: odd devices over a serial pty,
    even ones as packet-forwarder PUSH_DATA (one or two forwarders, so some
    frames are heard twice and merged), at ``rate`` transmissions a second."""

    def __init__(self, meters: int = 60, air: int = 20, *, seed: int = 1, rate: float = 200.0,
                 faults: tuple[str, ...] = ("garbage", "truncated", "replay"),
                 fault_rate: float = 0.02, first_device_id: int = 0x20000000) -> None:
        from tools.fleet import Fleet

        self.fleet = Fleet(meters, air, start=1_767_225_600.0, seed=seed, faults=faults,
                           fault_rate=fault_rate, first_device_id=first_device_id)
        self.rate = rate
        self.rng = random.Random(seed + 1000)
        master, slave = os.openpty()
        tty.setraw(slave)
        self.serial_path = os.ttyname(slave)
        self._slave = slave          # held open: the line survives gateway restarts
        os.set_blocking(master, False)
        self._master = master
        from tools.broker import free_port

        self.udp_port = free_port()
        from tools.pktfwd import ForwarderClient

        self._forwarders = [ForwarderClient(bytes.fromhex("aa555a00000000") + bytes((n,)),
                                            "127.0.0.1", self.udp_port) for n in range(2)]
        self.valid_ids: set[str] = set()
        self.sent = 0
        self.sent_valid = 0
        self.local_drops = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def devices(self) -> list[tuple[int, str, bytes]]:
        """(device_id, kind, key) of every node, for the registry."""
        return [(n.device_id, n.kind, n.key) for n in self.fleet.nodes]

    @property
    def keys(self) -> list[bytes]:
        """Every node's key (for leak checks)."""
        return [n.key for n in self.fleet.nodes]

    def start(self) -> None:
        """Send in a background thread until stop()."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait_sent_valid(self, n: int, timeout: float = WAIT_S) -> None:
        """Block until ``n`` valid frames in total have been sent."""
        wait_for(lambda: self.sent_valid >= n, timeout, f"{n} valid frames sent")

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            for tx in self.fleet.due(self.fleet.next_time()):
                self.send_one(tx.node.device_id if tx.node else None, tx.payload, tx.valid)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()
                if self._stop.is_set():
                    break

    def send_one(self, device_id: int | None, payload: bytes, valid: bool) -> None:
        """Put one transmission on a link and account for it."""
        from protocol import stream
        from tools.pktfwd import EU868_CHANNELS_MHZ, rxpk

        with self._lock:
            self.sent += 1
            if valid and device_id is not None:
                self.sent_valid += 1
                from protocol import frame

                _, dev, fcnt, _ = frame.parse_header(payload)
                self.valid_ids.add(f"{dev:08x}:{fcnt}")
        rng = self.rng
        if device_id is None:                 # garbage: raw bytes on either link
            if rng.random() < 0.5:
                self.serial_write(payload + b"\x00")
            else:
                self._udp(lambda f: f.send_raw(payload))
            return
        if device_id % 2:
            self.serial_write(stream.encode_record(stream.REC_FRAME, payload))
            return
        chan = rng.randrange(3)
        for fwd in rng.sample(self._forwarders, rng.randint(1, 2)):
            pkt = rxpk(payload, rssi_dbm=rng.randint(-124, -80),
                       lsnr_db=round(rng.uniform(-10, 8), 1), freq_mhz=EU868_CHANNELS_MHZ[chan],
                       sf=rng.choice([7, 9, 12]), chan=chan)
            self._udp(lambda f, p=pkt: f.push([p]), fwd)  # type: ignore[misc]

    def udp_raw(self, datagram: bytes) -> None:
        """Send any datagram to the gateway's UDP port from one of the forwarders."""
        self._udp(lambda f: f.send_raw(datagram))

    def _udp(self, action: Callable[[Any], None], fwd: Any = None) -> None:
        fwd = fwd or self.rng.choice(self._forwarders)
        try:
            action(fwd)
            fwd.read_acks()
        except OSError:                         # the gateway is down: ICMP unreachable
            self.local_drops += 1

    def serial_write(self, data: bytes, patience_s: float = 0.3) -> None:
        """Write to the pty; give up (count a local drop) when nobody reads for a while."""
        view = memoryview(data)
        deadline = time.monotonic() + patience_s
        while view:
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.local_drops += 1
                    return
                time.sleep(0.002)
            except OSError:
                self.local_drops += 1
                return

    def close(self) -> None:
        """Stop and close the links."""
        self.stop()
        for fwd in self._forwarders:
            fwd.close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------- the common rig


class Rig:
    """Broker, faulty link, backend, fleet and gateway for one delivery case."""

    def __init__(self, workdir: Path, *, meters: int = 60, air: int = 20, rate: float = 200.0,
                 seed: int = 1, spool_path: str | None = None, spool_max_mb: float = 64.0,
                 fsync: str = "normal", broker: Any = None, mqtt_port: int | None = None,
                 mqtt_extra: str = "", log_level: str = "info") -> None:
        from tools.broker import Broker

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.own_broker = broker is None
        # The backend's queue on the broker is unbounded, as docs/mqtt.md advises: with
        # Mosquitto's default (1000 per client) a fast drain overflows it and the broker,
        # not the gateway, drops messages the gateway had delivered.
        self.broker = broker or Broker(_mkdir(workdir / "broker"), "mosquitto",
                                       extra_config="max_queued_messages 0\n")
        if self.own_broker:
            self.broker.start()
        self.link = FaultyLink((self.broker.host, mqtt_port or self.broker.port), seed=seed)
        self.backend = Backend(self.broker.host, self.broker.port)
        self.backend.connect()
        self.fleet = FleetDriver(meters, air, seed=seed, rate=rate)
        self.gw = GatewayProc(workdir / "gateway", self.link.port, self.fleet.devices,
                              serial_url=self.fleet.serial_path, udp_port=self.fleet.udp_port,
                              spool_path=spool_path, spool_max_mb=spool_max_mb, fsync=fsync,
                              mqtt_extra=mqtt_extra, log_level=log_level)

    def kill_broker(self) -> None:
        """Cut the gateway's link, let the backend take what is on its way, kill -9 the broker.

        The link goes down first so no PUBACK can reach the gateway for a
        message the broker would then lose with its memory: the case measures
        the gateway, not Mosquitto's persistence.
        """
        self.link.set_mode("down")
        self.backend.quiet(0.5)
        self.backend.disconnect()
        self.broker.stop(kill=True)

    def restart_broker(self) -> None:
        """Start the broker, reconnect the backend, then let the gateway in again."""
        self.broker.start()
        self.backend.connect()
        self.link.set_mode("relay")

    def drain(self, result: CaseResult, timeout: float = WAIT_S) -> None:
        """Stop the fleet, wait until the spool is empty and the backend has it all, then
        stop the gateway and fill in the result."""
        self.fleet.stop()
        self.link.set_mode("relay")
        if not self.gw.running:
            self.gw.check()
            self.gw.start()

        def drained() -> bool:
            st = self.gw.status()
            spool = st["spool"]
            if st["ingest"]["dedup_waiting"] or st["ingest"]["commit_waiting"]:
                return False
            if spool["depth"]:
                return False
            expect = spool["accepted_total"] - spool["evicted_total"]
            return self.backend.delivered() >= int(expect)

        try:
            wait_for(drained, timeout, "the spool to drain to the backend")
        except KnuteError as exc:
            result.problems.append(str(exc))
        self.backend.quiet(0.3)
        code = self.gw.stop()
        if code != 0:
            result.problems.append(f"gateway exit status {code} on SIGTERM")
        self.finish(result)

    def finish(self, result: CaseResult) -> None:
        """Fill in the figures from the spool, the backend and the logs."""
        meta = self.gw.spool_meta()
        result.sent += self.fleet.sent
        result.accepted += meta["accepted_total"]
        result.evicted += meta["evicted_total"]
        result.delivered += self.backend.delivered()
        result.duplicates += self.backend.duplicates()
        result.lost += max(0, meta["accepted_total"] - meta["evicted_total"]
                           - self.backend.delivered())
        result.crashes += self.gw.crashes
        forged = self.backend.ids() - self.fleet.valid_ids
        if forged:
            result.problems.append(f"{len(forged)} readings the fleet never sent validly, "
                                   f"e.g. {sorted(forged)[:3]}")
        if self.backend.mismatched:
            result.problems.append(f"ids delivered twice with different content: "
                                   f"{self.backend.mismatched[:3]}")
        late = self.backend.out_of_order()
        if late:
            result.problems.append(f"first deliveries out of counter order for {late[:3]}")
        log = self.gw.log_text()
        tracebacks = log.count("Traceback (most recent call last)")
        if tracebacks:
            result.crashes += tracebacks
            result.problems.append(f"{tracebacks} traceback(s) in the gateway log")
        result.problems += key_leaks({"gateway log": log}, self.fleet.keys)
        result.notes.setdefault("sent_valid", 0)
        result.notes["sent_valid"] += self.fleet.sent_valid
        result.notes["not_accepted_valid"] = (self.fleet.sent_valid
                                              - len(self.backend.ids() & self.fleet.valid_ids))

    def close(self) -> None:
        """Stop everything this rig started."""
        self.fleet.close()
        self.gw.close()
        self.backend.disconnect()
        self.link.close()
        if self.own_broker:
            self.broker.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def rig(workdir: Path, **kw: Any) -> Iterator[Rig]:
    """A Rig that is always closed."""
    r = Rig(workdir, **kw)
    try:
        yield r
    finally:
        r.close()


# ---------------------------------------------------------------- delivery cases


def case_broker_outage(workdir: Path, *, outage_s: float | None = None,
                       frames: int | None = None, name: str = "broker_outage",
                       rate: float = 200.0, seed: int = 1) -> CaseResult:
    """The broker is killed (kill -9) while the fleet keeps sending.

    ``outage_s``: the broker stays down that long in real time. ``frames``:
    time-accelerated; the broker stays down while the fleet sends that many
    valid frames (the backlog a longer outage leaves at DESIGN_RATE_FPS).
    """
    result = CaseResult(name, runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.gw.start()
        r.fleet.start()
        wait_for(lambda: r.backend.delivered() >= 20, 60, "first deliveries")
        r.kill_broker()
        down_at = time.monotonic()
        if frames is not None:
            r.fleet.wait_sent_valid(r.fleet.sent_valid + frames, timeout=max(WAIT_S, frames / 50))
        else:
            time.sleep(outage_s or 1.0)
        result.notes["outage_real_s"] = round(time.monotonic() - down_at, 1)
        result.notes["backlog"] = int(r.gw.status()["spool"]["depth"])
        if not r.gw.check():
            result.problems.append("gateway died during the outage")
        r.restart_broker()
        time.sleep(0.5)
        r.drain(result)
    return result


def case_no_puback(workdir: Path, *, hold_s: float = 3.0, rate: float = 200.0,
                   seed: int = 2) -> CaseResult:
    """A broker that accepts the connection and PUBLISHes but never sends PUBACK."""
    result = CaseResult("no_puback", runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.gw.start()
        r.fleet.start()
        wait_for(lambda: r.backend.delivered() >= 20, 60, "first deliveries")
        r.link.set_mode("blackhole")
        wait_for(lambda: r.link.swallowed > 0, 60, "a PUBLISH into the black hole")
        time.sleep(0.5)          # acks of the last good connection are committed by now
        before = r.gw.status()["spool"]["acked_total"]
        time.sleep(hold_s)
        st = r.gw.status()
        if st["spool"]["acked_total"] != before:
            result.problems.append("rows were deleted from the spool without a PUBACK")
        result.notes["swallowed"] = r.link.swallowed
        result.notes["backlog"] = st["spool"]["depth"]
        result.notes["stale_connections"] = st["forwarder"].get("stale_connections", 0)
        if hold_s > 35 and not result.notes["stale_connections"]:
            result.problems.append("the forwarder never gave up on the silent connection")
        r.drain(result)
    return result


def case_reconnect_storm(workdir: Path, *, storm_s: float = 5.0, rate: float = 200.0,
                         seed: int = 3) -> CaseResult:
    """The broker connection is dropped every 0.5-3 s while the fleet sends."""
    result = CaseResult("reconnect_storm", runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.gw.start()
        r.fleet.start()
        wait_for(lambda: r.backend.delivered() >= 20, 60, "first deliveries")
        r.link.set_mode("storm")
        time.sleep(storm_s)
        result.notes["reconnects"] = r.gw.status()["forwarder"].get("reconnects", 0)
        result.notes["connections"] = r.link.connections
        r.drain(result)
    return result


def case_kill9(workdir: Path, *, cycles: int = 3, rate: float = 300.0,
               seed: int = 4) -> CaseResult:
    """The gateway is kill -9'd at random moments under load, ``cycles`` times.

    In every other cycle the broker link is down, so the kill meets a full
    spool. After each kill the spool file is checked (spool_problems) before
    the gateway starts again on it.
    """
    result = CaseResult("gateway_kill9", runs=cycles)
    rng = random.Random(seed)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.fleet.start()
        last_accepted = 0
        for cycle in range(cycles):
            r.link.set_mode("down" if cycle % 2 else "relay")
            r.gw.start()
            time.sleep(rng.uniform(0.2, 1.5))
            if not r.gw.check():
                result.problems.append(f"cycle {cycle}: the gateway died by itself")
            r.gw.kill()
            problems = spool_problems(r.gw.spool_path)
            result.problems += [f"cycle {cycle}: {p}" for p in problems]
            accepted = r.gw.spool_meta()["accepted_total"]
            if accepted < last_accepted:
                result.problems.append(f"cycle {cycle}: accepted_total went back")
            last_accepted = accepted
        result.notes["kills"] = r.gw.kills
        r.drain(result)
    return result


def _truncate_middle(path: str, keep: float) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


def _scribble(path: str, at: float, n: int, seed: int) -> None:
    rng = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(int(size * at))
        fh.write(rng.randbytes(n))


def case_corrupt_files(workdir: Path, *, seed: int = 5) -> CaseResult:
    """A truncated spool and a scribbled-over registry at start-up.

    The gateway must start, say what happened, move the broken file aside and
    keep what can be read; what it salvaged is then delivered. ``lost`` counts
    salvaged rows not delivered; rows destroyed by the damage itself are in
    the notes (``destroyed``).
    """
    result = CaseResult("corrupt_files", runs=2)
    with rig(workdir, meters=40, air=10, rate=300.0, seed=seed) as r:
        r.link.set_mode("down")
        r.gw.start()
        r.fleet.start()
        wait_for(lambda: r.gw.status()["spool"]["depth"] >= 1500, 60, "a spool backlog")
        r.fleet.stop()
        time.sleep(0.5)
        before = r.gw.status()["spool"]["depth"]
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly")
        # 1. the spool loses its tail (a torn copy, a full disk during a restore)
        _truncate_middle(r.gw.spool_path, 0.6)
        # 2. the registry gets a torn 512-byte sector in its device table
        _scribble(r.gw.registry_path, 0.6, 512, seed)
        r.gw.start()
        log = r.gw.log_text()
        st = r.gw.status()
        aside = [p.name for p in Path(r.gw.spool_path).parent.iterdir() if ".corrupt-" in p.name]
        if not any(n.startswith("spool.db.corrupt-") for n in aside):
            result.problems.append("the corrupt spool was not moved aside")
        if not any(n.startswith("registry.db.corrupt-") for n in aside):
            result.problems.append("the corrupt registry was not moved aside")
        if "corrupt" not in log:
            result.problems.append("the gateway did not say the files were corrupt")
        salvaged = int(st["spool"]["depth"])
        devices = int(st["devices"])
        result.notes.update({"spool_rows_before": before, "salvaged_rows": salvaged,
                             "destroyed": before - salvaged,
                             "devices_before": len(r.fleet.devices),
                             "devices_salvaged": devices})
        if devices == 0:
            result.problems.append("no device salvaged from the registry")
        r.link.set_mode("relay")
        try:
            wait_for(lambda: r.gw.status()["spool"]["depth"] == 0, WAIT_S, "salvage delivered")
        except KnuteError as exc:
            result.problems.append(str(exc))
        r.backend.quiet(0.5)
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly after the salvage")
        result.sent = r.fleet.sent
        result.accepted = before
        result.delivered = r.backend.delivered()
        result.lost = max(0, salvaged - result.delivered)
        result.duplicates = r.backend.duplicates()
        result.crashes = r.gw.crashes
        forged = r.backend.ids() - r.fleet.valid_ids
        if forged:
            result.problems.append(f"{len(forged)} readings never sent validly")
        result.problems += key_leaks({"gateway log": r.gw.log_text()}, r.fleet.keys)
    return result


@contextlib.contextmanager
def small_filesystem(size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted on a new directory (root only)."""
    mnt = Path(tempfile.mkdtemp(prefix="knute-full-"))
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs",
                          str(mnt)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        mnt.rmdir()
        raise KnuteError(f"cannot mount a small tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def case_disk_full(workdir: Path, *, free_kb: int = 1024, overfill: float = 2.0,
                   rate: float = 800.0, seed: int = 6) -> CaseResult:
    """The spool's file system fills up while the broker is away.

    The spool lives on a small tmpfs, its configured max_mb far above the
    disk; once the gateway runs, a filler file leaves ``free_kb`` free (the
    disk also fills with other files). The broker link is down; the fleet
    sends until about ``overfill`` times what fits was offered. The gateway
    must keep running, evict by its policy (oldest routine first), count the
    evictions, keep the file intact, and deliver what it kept.
    """
    from gateway.spool import RESERVE_BYTES

    result = CaseResult("disk_full", runs=1)
    size_kb = free_kb + RESERVE_BYTES // 1024 + 1024
    with small_filesystem(size_kb) as mnt, \
            rig(workdir, rate=rate, seed=seed, spool_path=str(mnt / "spool.db"),
                spool_max_mb=1024) as r:
        r.link.set_mode("down")
        r.gw.start()
        filler = shutil.disk_usage(mnt).free - free_kb * 1024
        with open(mnt / "other-files", "wb") as fh:
            fh.write(b"\xff" * max(0, filler))
        r.fleet.start()
        # About 300 bytes per stored row (JSON reading, topic, SQLite overhead).
        target = int(free_kb * 1024 / 300 * overfill)
        wait_for(lambda: r.fleet.sent_valid >= target or not r.gw.running, WAIT_S,
                 f"{target} frames offered")
        r.fleet.stop()
        time.sleep(1.0)
        if not r.gw.check():
            result.problems.append("gateway died when the disk filled:\n" + r.gw.log_tail())
            r.finish(result)
            return result
        st = r.gw.status()
        result.notes["spool_errors"] = st["totals"].get("spool_errors", 0)
        result.notes["evicted_at_full"] = st["spool"]["evicted_total"]
        result.notes["depth_at_full"] = st["spool"]["depth"]
        df = shutil.disk_usage(mnt)
        result.notes["disk_free_kb"] = df.free // 1024
        if not st["spool"]["evicted_total"]:
            result.problems.append("the disk filled but nothing was evicted")
        # Start over on the same full disk: the file must open and be consistent.
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly on a full disk")
        result.problems += spool_problems(r.gw.spool_path)
        r.gw.start()
        r.fleet.start()
        time.sleep(1.0)
        r.drain(result)
        if "evicted" not in r.gw.log_text():
            result.problems.append("evictions were not logged")
    return result


# ---------------------------------------------------------------- bad input


def mutate(rng: random.Random, buf: bytes, pool: Sequence[bytes],
           device_ids: Sequence[int]) -> bytes:
    """One random mutation of a frame: bit flips, byte edits, splices, header forgeries."""
    b = bytearray(buf)
    op = rng.randrange(11)
    if op == 0 and b:
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 8))
    elif op == 3 and len(b) > 1:
        pos = rng.randrange(len(b))
        del b[pos:pos + rng.randint(1, 8)]
    elif op == 4:
        del b[rng.randrange(len(b) + 1):]
    elif op == 5:
        other = rng.choice(pool)
        cut = rng.randrange(min(len(b), len(other)) + 1)
        b = b[:cut] + bytearray(other[cut:])
    elif op == 6 and len(b) >= 5:               # the same frame under another device's id
        b[1:5] = rng.choice(device_ids).to_bytes(4, "big")
    elif op == 7 and len(b) >= 8:               # a higher (forged) frame counter
        fcnt = min(0xFFFFFF, int.from_bytes(b[5:8], "big") + rng.randint(1, 1000))
        b[5:8] = fcnt.to_bytes(3, "big")
    elif op == 8:
        b = bytearray(rng.randbytes(rng.randrange(0, 300)))
    elif op == 9 and b:
        b[0] = rng.randrange(256)
    else:                                       # a longer tail
        b += rng.randbytes(rng.randint(1, 300))
    return bytes(b)


@dataclass
class FuzzTally:
    """What the in-process fuzzer saw."""

    inputs: int = 0
    submitted: int = 0
    accepted: int = 0
    merged: int = 0
    rejected: int = 0
    forgeries: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)


def fuzz_in_process(n: int, *, seed: int = 7) -> tuple[FuzzTally, dict[str, Any]]:
    """``n`` random and mutated frames through the serial reader, the UDP source and
    the pipeline, in process. Returns the tally and the counters' snapshot.

    A forgery is an accepted frame whose bytes are not those of a frame the
    fleet really sent. Every rejection must be counted by reason.
    """
    from gateway.config import UdpSourceConfig
    from gateway.pipeline import Pipeline, Reception
    from gateway.registry import Device
    from gateway.sources.serial import RecordReader
    from gateway.sources.udp_forwarder import UdpForwarderSource
    from gateway.status import Counters
    from protocol import stream
    from tools.fleet import Fleet
    from tools.pktfwd import push_data, rxpk

    logging.getLogger("knute").setLevel(logging.ERROR)    # rejections are counted, not logged
    rng = random.Random(seed)
    fleet = Fleet(30, 10, start=1_767_225_600.0, seed=seed, first_device_id=0x30000000)
    genuine: list[bytes] = []
    while len(genuine) < 2000:
        genuine += [tx.payload for tx in fleet.due(fleet.next_time()) if tx.valid]
    genuine_set = set(genuine)
    devices = {n.device_id: Device(n.device_id, n.kind, n.key) for n in fleet.nodes}
    ids = [*devices, 0xDEADBEEF]
    counters = Counters()
    pipeline = Pipeline(devices, counters=counters, dedup_window_s=0.01)
    tally = FuzzTally()
    clock = [0.0]
    receptions: list[Reception] = []
    reader = RecordReader("serial", counters)
    udp = UdpForwarderSource(UdpSourceConfig(name="udp", host="127.0.0.1", port=0),
                             receptions.append, counters)
    eui = bytes.fromhex("aa555a0000000001")
    next_genuine = 0

    def submit_all() -> None:
        for rx in receptions:
            tally.submitted += 1
            verdict = pipeline.submit(rx)
            if verdict.status == "pending":
                tally.accepted += 1
                if rx.frame not in genuine_set:
                    tally.forgeries.append(rx.frame.hex())
            elif verdict.status == "merged":
                tally.merged += 1
            else:
                tally.rejected += 1
        receptions.clear()
        clock[0] += 0.001
        pipeline.due(clock[0])

    try:
        for i in range(n):
            tally.inputs += 1
            if i % 50 == 0 and next_genuine < len(genuine):    # genuine traffic in between
                buf = genuine[next_genuine]
                next_genuine += 1
            else:
                buf = mutate(rng, rng.choice(genuine), genuine, ids)
            path = i % 3
            try:
                if path == 0:
                    receptions.append(Reception("direct", "serial", buf, 0.0, clock[0],
                                                {"source": "direct"}))
                elif path == 1:
                    if len(buf) <= stream.MAX_BODY - stream.RADIO_META_LEN:
                        rtype = rng.choice((stream.REC_FRAME, stream.REC_RADIO))
                        body = (stream.pack_radio(-90, 50, 868_100_000, 9, buf)
                                if rtype == stream.REC_RADIO else buf)
                        record = stream.encode_record(rtype, body)
                    else:
                        record = b"\x00" + buf + b"\x00"
                    if rng.random() < 0.1:
                        record = mutate(rng, record, genuine, ids)
                    cut = rng.randrange(len(record) + 1)
                    for part in (record[:cut], record[cut:]):
                        receptions += reader.feed(part, 0.0, clock[0])
                else:
                    pkt = rxpk(buf, rssi_dbm=-100, lsnr_db=1.0, freq_mhz=868.1, sf=9)
                    if rng.random() < 0.05:
                        pkt[rng.choice(list(pkt))] = rng.choice([None, -1, "x", [], {}, 1e99])
                    dgram = push_data(eui, [pkt])
                    if rng.random() < 0.1:
                        dgram = mutate(rng, dgram, genuine, ids)
                    udp.handle(dgram, 0.0, clock[0])
                submit_all()
            except Exception as exc:  # any exception here is a crash of the gateway path
                tally.crashes.append(f"{type(exc).__name__}: {exc} on {buf.hex()}")
                receptions.clear()
        receptions += reader.feed(b"\x00", 0.0, clock[0])
        submit_all()
        pipeline.drain()
    finally:
        udp.stop(timeout=0.1)
    return tally, counters.snapshot()


ATHERIS_CHILD = r"""
import sys, atheris
with atheris.instrument_imports(include=["protocol"]):
    from protocol import frame, stream, cbor
    from protocol.errors import FrameError
from gateway.sources import udp_forwarder as uf

KEY = bytes(range(16))

def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    rest = fdp.ConsumeBytes(len(data))
    try:
        if which == 0:
            frame.decode(rest, KEY)
        elif which == 1:
            dec = stream.StreamDecoder()
            for item in dec.feed(rest):
                if not isinstance(item, (tuple, FrameError)):
                    raise AssertionError(repr(item))
        elif which == 2:
            cbor.decode(rest)
        else:
            d = uf.parse_datagram(rest)
            doc = uf.parse_push(d.body)
            for pkt in doc.get("rxpk") or ():
                try:
                    uf.parse_rxpk(pkt, d.gateway_eui, "fuzz")
                except FrameError:
                    pass
    except FrameError:
        pass

atheris.Setup(sys.argv, one_input)
atheris.Fuzz()
"""


def fuzz_atheris(runs: int, workdir: Path, *, seed: int = 1,
                 timeout_s: float = 1200.0) -> dict[str, Any]:
    """Coverage-guided fuzzing (atheris) of frame decode, stream framing, CBOR and the
    packet-forwarder parsers for ``runs`` inputs. {"runs", "crashed", "output"}."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "fuzz_child.py"
    script.write_text(ATHERIS_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(script), f"-runs={runs}", f"-seed={seed}", "-max_len=400",
         f"-artifact_prefix={workdir}/", "-print_final_stats=1"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s)
    text = out.stdout + out.stderr
    match = re.search(r"Done (\d+) runs", text)
    done = int(match.group(1)) if match else 0
    return {"runs": done, "crashed": out.returncode != 0, "output": text[-3000:],
            "available": "No module named 'atheris'" not in text}


def case_bad_input(workdir: Path, *, frames: int = 20_000, atheris_runs: int = 20_000,
                   seed: int = 7) -> CaseResult:
    """Random and mutated frames in process, through the serial and UDP sources and the
    pipeline, plus atheris on the decoders: zero crashes, zero accepted forgeries,
    every rejection counted by reason."""
    result = CaseResult("bad_input", runs=1)
    tally, snap = fuzz_in_process(frames, seed=seed)
    result.sent = tally.inputs
    result.accepted = tally.accepted
    result.delivered = tally.accepted          # in process: "delivered" = handed to the spool
    result.crashes = len(tally.crashes)
    result.problems += [f"crash: {c}" for c in tally.crashes[:5]]
    if tally.forgeries:
        result.problems.append(f"{len(tally.forgeries)} forged frames accepted, e.g. "
                               f"{tally.forgeries[0]}")
    totals = snap["totals"]
    by_reason = sum(snap["rejected"].values())
    if by_reason != totals.get("rejected", 0):
        result.problems.append(f"rejections by reason add up to {by_reason}, "
                               f"total says {totals.get('rejected', 0)}")
    pipeline_rejects = sum(snap["sources"].get(s, {}).get("rejected", 0)
                           for s in ("direct",))
    if tally.submitted != tally.accepted + tally.merged + tally.rejected:
        result.problems.append("a submitted frame got no verdict")
    serial = snap["sources"].get("serial", {})
    result.notes.update({"rejected_by_reason": snap["rejected"], "merged": tally.merged,
                         "direct_rejected": pipeline_rejects,
                         "serial_received": serial.get("received", 0)})
    if atheris_runs:
        fz = fuzz_atheris(atheris_runs, workdir / "atheris", seed=seed)
        if not fz["available"]:
            result.notes["atheris"] = "not installed"
        else:
            result.sent += fz["runs"]
            result.notes["atheris_runs"] = fz["runs"]
            if fz["crashed"]:
                result.crashes += 1
                result.problems.append("atheris found a crash:\n" + fz["output"])
            elif fz["runs"] < atheris_runs:
                result.problems.append(f"atheris ran {fz['runs']} of {atheris_runs} inputs")
    return result


def case_bad_input_daemon(workdir: Path, *, frames: int = 2000, rate: float = 1000.0,
                          seed: int = 8) -> CaseResult:
    """Mutated frames and records through the running gateway's pty and UDP port,
    interleaved with the fleet's genuine traffic: the process survives, only genuine
    frames reach the backend, every rejection is counted."""
    result = CaseResult("bad_input_daemon", runs=1)
    from protocol import stream
    from tools.pktfwd import push_data, rxpk

    rng = random.Random(seed)
    with rig(workdir, meters=20, air=10, rate=rate, seed=seed) as r:
        r.gw.start()
        genuine: list[bytes] = []
        fleet = r.fleet.fleet
        while len(genuine) < 500:
            genuine += [tx.payload for tx in fleet.due(fleet.next_time()) if tx.valid]
        ids = [d for d, _, _ in r.fleet.devices]
        sent_bad = 0
        for i, good in enumerate(genuine):
            r.fleet.send_one(int.from_bytes(good[1:5], "big"), good, True)
            for _ in range(max(1, frames // len(genuine))):
                bad = mutate(rng, good if rng.random() < 0.8 else rng.choice(genuine),
                             genuine, ids)
                if i % 2:
                    record = stream.encode_record(stream.REC_FRAME, bad[:stream.MAX_BODY])
                    if rng.random() < 0.2:
                        record = mutate(rng, record, genuine, ids)
                    r.fleet.serial_write(record + b"\x00")
                else:
                    dgram = push_data(bytes.fromhex("aa555a0000000001"),
                                      [rxpk(bad, rssi_dbm=-99, lsnr_db=0.5, freq_mhz=868.1,
                                            sf=9)])
                    if rng.random() < 0.2:
                        dgram = mutate(rng, dgram, genuine, ids)
                    r.fleet.udp_raw(dgram)
                sent_bad += 1
                r.fleet.sent += 1
            time.sleep(1.0 / rate)
        result.notes["mutated_sent"] = sent_bad
        time.sleep(1.0)
        if not r.gw.check():
            result.problems.append("the gateway died on bad input")
        st = r.gw.status()
        rejected = st["rejected"]
        result.notes["rejected_by_reason"] = rejected
        if sum(rejected.values()) != st["totals"]["rejected"]:
            result.problems.append("rejections by reason do not add up")
        r.drain(result)
    return result


# ---------------------------------------------------------------- security


def case_security(workdir: Path, *, tls: bool = True, seed: int = 9) -> CaseResult:
    """Forged tags, replays (also after a restart and across two sources), counter
    resets, device-id spoofing; no key in logs, output or status; 0600 files; TLS
    with a test CA and a password against Mosquitto for the whole gateway path."""
    from protocol import frame, stream
    from tools.pktfwd import push_data, rxpk

    result = CaseResult("security", runs=1)
    broker: Any = None
    mqtt_extra = ""
    tls_port = None
    password = "s3cret"
    if tls:
        # Mosquitto with a plain listener (the backend) and a TLS listener that wants
        # a client certificate from the test CA and the gateway's password.
        from tests.gateway.test_forwarder_tls import TlsBroker

        bdir = _mkdir(workdir / "tls-broker")
        broker = TlsBroker(bdir)
        pki = broker.pki
        tls_port = broker.tls_port
        broker.start()
        pw_file = bdir / "gateway.password"  # the password only in a 0600 file
        pw_file.write_text(password + "\n")
        pw_file.chmod(0o600)
        mqtt_extra = (f'username = "gateway"\npassword_file = "{pw_file}"\n'
                      f'[mqtt.tls]\nca = "{pki["ca.pem"]}"\ncert = "{pki["client.pem"]}"\n'
                      f'key = "{pki["client.key"]}"\n')
    try:
        with rig(workdir, meters=4, air=2, rate=50.0, seed=seed, broker=broker,
                 mqtt_port=tls_port, mqtt_extra=mqtt_extra, log_level="debug") as r:
            _security_checks(r, result, frame, stream, push_data, rxpk, password)
    finally:
        if broker is not None:
            broker.stop()
    return result


def _security_checks(r: Rig, result: CaseResult, frame: Any, stream: Any,
                     push_data: Any, rxpk: Any, password: str) -> None:
    nodes = r.fleet.fleet.nodes
    meter, other = nodes[1], nodes[3]          # odd ids: both on the serial line
    gw = r.gw
    gw.start()
    if (os.stat(gw.registry_path).st_mode & 0o777) != 0o600:
        result.problems.append(f"registry mode {oct(os.stat(gw.registry_path).st_mode)}")
    for suffix in ("-wal", "-shm"):
        p = gw.registry_path + suffix
        if os.path.exists(p) and os.stat(p).st_mode & 0o077:
            result.problems.append(f"{p} is readable by others")

    def values(n: int) -> dict[str, Any]:
        return {"index": 1000 + n, "profile_end_h": 1, "battery": 18, "profile": [n % 9]}

    def genuine(node: Any, fcnt: int) -> bytes:
        return bytes(frame.encode(node.kind, node.device_id, fcnt, values(fcnt), node.key))

    def serial(buf: bytes) -> None:
        r.fleet.serial_write(stream.encode_record(stream.REC_FRAME, buf))
        r.fleet.sent += 1

    def udp(buf: bytes) -> None:
        r.fleet._udp(lambda f: f.send_raw(push_data(f.eui, [rxpk(
            buf, rssi_dbm=-90, lsnr_db=2.0, freq_mhz=868.1, sf=9)])))
        r.fleet.sent += 1

    def rejected() -> dict[str, int]:
        return dict(gw.status()["rejected"])

    def expect(reason: str, n: int, before: dict[str, int]) -> None:
        try:
            wait_for(lambda: rejected().get(reason, 0) - before.get(reason, 0) >= n, 20,
                     f"{n} x {reason}")
        except KnuteError as exc:
            result.problems.append(f"{exc}; rejected now {rejected()}")

    accepted_ids: set[str] = set()
    sent: dict[int, bytes] = {}
    for fcnt in range(100, 110):
        sent[fcnt] = genuine(meter, fcnt)
        serial(sent[fcnt])
        accepted_ids.add(f"{meter.device_id:08x}:{fcnt}")
    r.fleet.valid_ids |= accepted_ids
    wait_for(lambda: accepted_ids <= r.backend.ids(), 30, "genuine frames delivered")
    base = rejected()
    # Forged tag: the right header, a wrong key.
    serial(frame.encode(meter.kind, meter.device_id, 200, values(200), bytes(16)))
    # A flipped bit in the ciphertext of a genuine frame with a fresh counter.
    forged = bytearray(genuine(meter, 201))
    forged[9] ^= 0x01
    udp(bytes(forged))
    # A frame for one device under another device's id (re-addressed header).
    spoof = bytearray(genuine(meter, 202))
    spoof[1:5] = other.device_id.to_bytes(4, "big")
    serial(bytes(spoof))
    # ... and sealed with the first device's key but claiming the second's id.
    serial(frame.encode(other.kind, other.device_id, 203, values(203), meter.key))
    expect("frame_tag", 4, base)
    # Replays: an old accepted frame on the same source, on another source.
    base = rejected()
    serial(sent[103])
    udp(sent[104])
    expect("replay", 2, base)
    # The last accepted frame again on another source: a duplicate, not a new reading.
    base = rejected()
    udp(sent[109])
    expect("duplicate", 1, base)
    # Counter reset: a node that starts again at 0 is held back for the operator.
    base = rejected()
    serial(genuine(meter, 0))
    udp(genuine(meter, 1))
    expect("counter_reset", 2, base)
    # After kill -9 and a restart, replays of accepted frames are still rejected.
    gw.kill()
    gw.start()
    base = rejected()
    for fcnt in (100, 105, 109):
        (serial if fcnt % 2 else udp)(sent[fcnt])
    try:
        wait_for(lambda: sum(rejected().get(k, 0) - base.get(k, 0)
                             for k in ("replay", "duplicate")) >= 3, 20,
                 "replays after restart rejected")
    except KnuteError as exc:
        result.problems.append(str(exc))
    # A new genuine frame still gets through.
    fresh = genuine(meter, 110)
    udp(fresh)
    new_id = f"{meter.device_id:08x}:110"
    r.fleet.valid_ids.add(new_id)
    accepted_ids.add(new_id)
    try:
        wait_for(lambda: new_id in r.backend.ids(), 30, "a fresh frame after the restart")
    except KnuteError as exc:
        result.problems.append(str(exc))
    # Nothing but the genuine readings reached the backend.
    extra = r.backend.ids() - accepted_ids
    if extra:
        result.problems.append(f"forged or replayed readings delivered: {sorted(extra)}")
    # Keys never in logs, CLI output or status.
    knute = str(Path(sys.executable).parent / "knute")
    outputs: dict[str, str] = {"status": json.dumps(gw.status())}
    for args in (["devices", "list", "--json"], ["devices", "list"],
                 ["devices", "show", f"{meter.device_id:08x}"],
                 ["devices", "show", f"{meter.device_id:08x}", "--json"],
                 ["gateway", "status", "--json"], ["gateway", "status"],
                 ["gateway", "check", "--json"]):
        out = subprocess.run([knute, *args, "--config", str(gw.config)], capture_output=True,
                             text=True, timeout=60)
        outputs[" ".join(args)] = out.stdout + out.stderr
    code = gw.stop()
    if code != 0:
        result.problems.append(f"gateway exit status {code}")
    outputs["gateway log"] = gw.log_text()
    outputs["broker log"] = r.broker.log_text()
    result.problems += key_leaks(outputs, [*r.fleet.keys, password])
    result.sent = r.fleet.sent
    result.accepted = gw.spool_meta()["accepted_total"]
    result.delivered = len(r.backend.ids())
    result.lost = max(0, result.accepted - result.delivered)
    result.duplicates = r.backend.duplicates()
    result.crashes = gw.crashes
    db = sqlite3.connect(gw.spool_path)
    try:
        row = db.execute("SELECT fcnt FROM replay WHERE device_id = ?",
                         (meter.device_id,)).fetchone()
    finally:
        db.close()
    result.notes["replay_counter_after"] = None if row is None else int(row[0])
    if row is None or int(row[0]) != 110:
        result.problems.append(f"replay counter is {row}, expected 110")


# ---------------------------------------------------------------- firmware power cuts


def case_firmware_power_cut(workdir: Path, *, cuts: int = 5, seed: int = 10) -> CaseResult:
    """kill -9 of the unix-port firmware at random points of its counter and index
    writes, ``cuts`` times: never a reused frame counter, the index never goes back.

    Uses the firmware bench harness (tests/firmware/nodeharness.py): writes pause
    halfway (``pause_writes_ms``) and are traced, so a cut lands before, inside
    or after a write at random.
    """
    from tests.firmware.nodeharness import (
        HOUR_T0,
        KEY,
        BenchNode,
        compile_lib,
        pulse_lines,
        water_config,
    )

    result = CaseResult("firmware_power_cut", runs=cuts)
    rng = random.Random(seed)
    lib = compile_lib(_mkdir(workdir / "lib"))
    micropython = Path(sys.executable).parent / "micropython"
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["fcnt_block"] = 2
    cfg["jitter_s"] = 0
    cfg["power"] = {"boot_loop_limit": 1000}
    cfg["bench"].update({"trace_writes": True, "pause_writes_ms": 60, "time_scale": 3600 * 4,
                         "stop_after_s": 400 * 3600})
    node = BenchNode(workdir / "node", micropython, lib, cfg, heap="72k")
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [30] * 420, 6))
    writes = re.compile(r"knute: writing (fcnt|meter)")
    in_write = 0
    try:
        for _ in range(cuts):
            seen = len([ln for ln in node.lines if writes.search(ln)])
            node.start()
            node.wait_line(r"knute: writing (fcnt|meter)", count=seen + rng.randint(1, 4))
            time.sleep(rng.uniform(0.0, 0.09))
            if node.proc is not None and node.proc.poll() is not None:
                result.problems.append("the node exited before its power cut:\n"
                                       + "\n".join(node.lines[-10:]))
                break
            node.kill9()
            if list((node.dir / "state").glob("*.tmp")):
                in_write += 1
        node.start()
        time.sleep(0.5)
        node.kill9()
        frames = [frame for rtype, frame in node.records() if rtype == 1]
    finally:
        node.close()
    from protocol import frame as pframe

    decoded = [pframe.decode(buf, KEY) for buf in frames]
    fcnts = [d["fcnt"] for d in decoded]
    indexes = [d["values"]["index"] for d in decoded]
    reused = len(fcnts) - len(set(fcnts))
    result.sent = len(fcnts)
    result.accepted = len(set(fcnts))
    result.delivered = len(set(fcnts))
    result.duplicates = reused
    result.notes.update({"cuts_inside_a_write": in_write, "frames": len(fcnts),
                         "recovered_writes": node.console().count("a write was cut short"),
                         "safe_mode": node.console().count("SAFE MODE")})
    if reused or fcnts != sorted(fcnts):
        result.problems.append(f"frame counter reused or out of order: {fcnts}")
    if indexes != sorted(indexes):
        result.problems.append(f"the index went back: {indexes}")
    if "Traceback" in node.console():
        result.crashes += 1
        result.problems.append("a traceback on the node console")
    if len(fcnts) < cuts // 2:
        result.problems.append(f"only {len(fcnts)} frames in {cuts} power cycles")
    return result


# ---------------------------------------------------------------- the command


@dataclass(frozen=True)
class Case:
    """One case with its full and quick parameters."""

    name: str
    run: Callable[..., CaseResult]
    full: dict[str, Any]
    quick: dict[str, Any]


CASES: tuple[Case, ...] = (
    Case("broker_outage_1s", case_broker_outage,
         {"outage_s": 1.0, "name": "broker_outage_1s"},
         {"outage_s": 1.0, "name": "broker_outage_1s"}),
    Case("broker_outage_30s", case_broker_outage,
         {"outage_s": 30.0, "name": "broker_outage_30s"},
         {"outage_s": 3.0, "name": "broker_outage_30s"}),
    Case("broker_outage_10min", case_broker_outage,
         {"frames": int(600 * DESIGN_RATE_FPS), "rate": 1000.0, "name": "broker_outage_10min"},
         {"frames": 1500, "rate": 800.0, "name": "broker_outage_10min"}),
    Case("no_puback", case_no_puback, {"hold_s": 40.0}, {"hold_s": 3.0}),
    Case("reconnect_storm", case_reconnect_storm, {"storm_s": 60.0}, {"storm_s": 6.0}),
    Case("gateway_kill9", case_kill9, {"cycles": 50}, {"cycles": 3}),
    Case("corrupt_files", case_corrupt_files, {}, {}),
    Case("disk_full", case_disk_full, {"free_kb": 4096, "overfill": 3.0},
         {"free_kb": 1024, "overfill": 1.5}),
    Case("bad_input", case_bad_input, {"frames": 1_000_000, "atheris_runs": 1_000_000},
         {"frames": 20_000, "atheris_runs": 20_000}),
    Case("bad_input_daemon", case_bad_input_daemon, {"frames": 50_000}, {"frames": 2000}),
    Case("security", case_security, {}, {}),
    Case("udp_flood", bench_udp_flood.case_udp_flood, {"flood_s": 20.0},
         {"flood_s": 4.0, "rate": 10000.0, "legit_rate": 10.0}),
    Case("firmware_power_cut", case_firmware_power_cut, {"cuts": 100}, {"cuts": 5}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``knute bench reliability``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="each case once, short (about what make test runs)")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES],
                        help="run only this case (repeatable)")
    parser.add_argument("--workdir", help="keep every case's files (logs, spools) here")


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as fixed-width text."""
    head = list(ROW_KEYS)
    cells = [[str(r[k]) for k in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    for c in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(c, widths, strict=True))))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the chosen cases and print the table (or JSON)."""
    chosen = [c for c in CASES if not args.case or c.name in args.case]
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="knute-rel-")
    base = Path(args.workdir) if args.workdir else Path(tmp.name if tmp else ".")
    results: list[CaseResult] = []
    try:
        for case in chosen:
            params = case.quick if args.quick else case.full
            if not args.json:
                print(f"running {case.name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                res = case.run(_mkdir(base / case.name), **params)
            except KnuteError as exc:
                res = CaseResult(case.name, problems=[f"case could not run: {exc}"])
            res.notes["seconds"] = round(time.monotonic() - started, 1)
            results.append(res)
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows = [r.row() for r in results]
    if args.json:
        json.dump({"cases": rows}, sys.stdout)
        print()
    else:
        print(render_table(rows))
        for res in results:
            for problem in res.problems:
                print(f"{res.case}: {problem}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1

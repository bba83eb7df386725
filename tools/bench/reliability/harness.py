"""What every reliability case runs on: backend subscriber, gateway, fleet, broker."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.bench.reliability.results import (
    PREFIX,
    WAIT_S,
    CaseResult,
    key_leaks,
)
from knute.tools.rig.faults import FaultyLink
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.ptys import HeldPty
from knute.tools.rig.subscriber import Message, Subscriber
from knute.tools.rig.wait import wait_for

# ---------------------------------------------------------------- the backend


class Backend:
    """The MQTT subscriber standing for the city's backend (QoS 1, own connection)."""

    def __init__(self, host: str, port: int, *, prefix: str = PREFIX,
                 tls_port: int | None = None, more: Sequence[tuple[str, int]] = (),
                 persistent: bool = False) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        # Further brokers (a gateway's fallbacks) subscribed to as well; ``persistent``:
        # sessions that outlive the subscriber's connection (fixed client ids).
        self.more = list(more)
        self.persistent = persistent
        self._more_subs: list[Subscriber] = []
        self.payloads: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}
        # Per device, (fcnt, broker) of each first delivery; the broker is 0 for
        # ``port``, 1.. for the ``more`` brokers in their order.
        self.first: dict[str, list[tuple[int, int]]] = {}
        # Per (device, broker), the fcnt of each id's first copy through that broker.
        self.per_broker: dict[tuple[str, int], list[int]] = {}
        self._seen: set[tuple[str, int]] = set()       # (id, broker)
        self.mismatched: list[str] = []
        self._lock = threading.Lock()
        self._sub: Subscriber | None = None

    @property
    def client_id(self) -> str:
        """The MQTT client id of the first subscription (the same on every connect)."""
        return f"rel-backend-{os.getpid()}-{id(self)}"

    def connect(self) -> None:
        """Connect and subscribe; returns once the SUBACK is in."""
        self._sub = Subscriber(self.host, self.port, f"{self.prefix}/+/+/up",
                               client_id=self.client_id,
                               on_message=functools.partial(self._on_message, via=0),
                               clean_session=not self.persistent)
        self._more_subs = [Subscriber(host, port, f"{self.prefix}/+/+/up",
                                      client_id=f"rel-backend-{os.getpid()}-{id(self)}-{n}",
                                      on_message=functools.partial(self._on_message,
                                                                   via=n + 1),
                                      clean_session=not self.persistent)
                           for n, (host, port) in enumerate(self.more)]

    def disconnect(self) -> None:
        """Stop the clients."""
        subs = [self._sub, *self._more_subs]
        self._sub, self._more_subs = None, []
        for sub in subs:
            if sub is not None:
                with contextlib.suppress(Exception):
                    sub.close()

    def _on_message(self, msg: Message, *, via: int = 0) -> None:
        try:
            doc = msg.doc()
            rid = str(doc["id"])
            device = str(doc["device"])
            fcnt = int(doc["fcnt"])
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.mismatched.append(f"unreadable message on {msg.topic}")
            return
        with self._lock:
            if (rid, via) not in self._seen:
                self._seen.add((rid, via))
                self.per_broker.setdefault((device, via), []).append(fcnt)
            known = self.payloads.get(rid)
            if known is None:
                self.payloads[rid] = msg.payload
                self.counts[rid] = 1
                self.first.setdefault(device, []).append((fcnt, via))
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

    def problems(self, valid_ids: set[str]) -> list[str]:
        """What arrived that should not have: readings no valid frame carried, and ids
        delivered twice with different content."""
        found: list[str] = []
        forged = self.ids() - valid_ids
        if forged:
            found.append(f"{len(forged)} readings never sent validly, e.g. {sorted(forged)[:3]}")
        if self.mismatched:
            found.append(f"ids delivered twice with different content: {self.mismatched[:3]}")
        return found

    def out_of_order(self) -> list[str]:
        """Devices whose readings came through one broker out of frame-counter order
        (the first copy of each id through that broker), with the first such pair.

        That is the gateway's promise (docs/mqtt.md): in order through each broker.
        Across brokers a backend subscribed to each has no order to go by: a reading
        the old broker acknowledged may reach it after newer ones through the next
        (``reordered_across_brokers``).
        """
        found: list[str] = []
        with self._lock:
            for (device, via), seq in self.per_broker.items():
                for a, b in itertools.pairwise(seq):
                    if b <= a:
                        found.append(f"{device}: fcnt {b} after {a} via broker {via}")
                        break
        return found

    def reordered_across_brokers(self) -> list[str]:
        """Devices whose first deliveries, whichever broker brought them, are not in
        frame-counter order, with the first such pair and the brokers of each."""
        found: list[str] = []
        with self._lock:
            for device, seq in self.first.items():
                for (fa, va), (fb, vb) in itertools.pairwise(seq):
                    if fb <= fa:
                        found.append(f"{device}: fcnt {fb} via broker {vb} "
                                     f"after {fa} via broker {va}")
                        break
        return found

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


class GatewayProc(GatewayProcess):
    """The gateway of a reliability case: ``knute gateway run`` on a generated config.

    ``devices``: (device_id, kind, key) registered through the registry's CSV
    import; ``serial_url`` and ``udp_port`` choose the sources.
    """

    def __init__(self, root: Path, mqtt_port: int, devices: Sequence[tuple[int, str, bytes]],
                 *, serial_url: str | None = None, udp_port: int | None = None,
                 spool_path: str | None = None, spool_max_mb: float = 64.0,
                 fsync: str = "normal", mqtt_extra: str = "", mqtt_host: str = "127.0.0.1",
                 log_level: str = "info", log_json: bool = False, gateway_id: str = "rel",
                 fallback_ports: Sequence[int] = ()) -> None:
        from knute.gateway.device_csv import csv_header, csv_line
        from knute.gateway.registry import Registry

        super().__init__(root)
        self.spool_path = spool_path or str(root / "spool.db")
        self.registry_path = str(root / "registry.db")
        self.log_json = log_json
        sources = ""
        if serial_url is not None:
            sources += (f'[[serial]]\nname = "serial"\nurl = "{serial_url}"\n'
                        "reopen_min_s = 0.05\nreopen_max_s = 0.5\n")
        if udp_port is not None:
            sources += f'[[packet_forwarder]]\nname = "udp"\nlisten = "127.0.0.1:{udp_port}"\n'
        brokers = (f'host = "{mqtt_host}"\nport = {mqtt_port}' if not fallback_ports else
                   "brokers = [" + ", ".join(f'"{mqtt_host}:{p}"'
                                             for p in (mqtt_port, *fallback_ports)) + "]")
        self.write_config(f"""
[gateway]
id = "{gateway_id}"
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
{brokers}
prefix = "{PREFIX}"
keepalive = 5
{mqtt_extra}
[downlinks]
# The cases count spool rows as readings: the data-rate rule's command progress
# would be rows too (ADR itself is tested in tests/e2e/test_adr_*.py).
adr = false
{sources}""")
        if devices:
            reg = Registry(self.registry_path)
            try:
                text = csv_header(with_location=False) + "".join(
                    csv_line(d, kind, key) for d, kind, key in devices)
                reg.import_csv(text)
            finally:
                reg.close()

    def start(self, *, wait_sources: bool = True, log_json: bool | None = None,
              timeout: float = 60.0) -> None:
        """Start the daemon (with --log-json if this case asked for it)."""
        super().start(wait_sources=wait_sources,
                      log_json=self.log_json if log_json is None else log_json,
                      timeout=timeout)

    def spool_meta(self) -> dict[str, int]:
        """The spool's persisted counters, read from the file (gateway stopped or running)."""
        db = sqlite3.connect(self.spool_path, timeout=10)
        try:
            return {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        finally:
            db.close()


class FleetDriver:
    """Sends a seeded fleet's frames to the gateway: odd devices over a serial pty,
    even ones as packet-forwarder PUSH_DATA (one or two forwarders, so some
    frames are heard twice and merged), at ``rate`` transmissions a second."""

    def __init__(self, meters: int = 60, air: int = 20, *, seed: int = 1, rate: float = 200.0,
                 faults: tuple[str, ...] = ("garbage", "truncated", "replay"),
                 fault_rate: float = 0.02, first_device_id: int = 0x20000000) -> None:
        from knute.tools.sim.fleet import Fleet

        self.fleet = Fleet(meters, air, start=1_767_225_600.0, seed=seed, faults=faults,
                           fault_rate=fault_rate, first_device_id=first_device_id)
        self.rate = rate
        self.rng = random.Random(seed + 1000)
        self._pty = HeldPty()        # held open: the line survives gateway restarts
        self.serial_path = self._pty.path
        from knute.tools.rig.broker import free_port

        self.udp_port = free_port()
        from knute.tools.sim.pktfwd import ForwarderClient

        self._forwarders = [ForwarderClient(bytes.fromhex("aa555a00000000") + bytes((n,)),
                                            "127.0.0.1", self.udp_port) for n in range(2)]
        self.valid_ids: set[str] = set()
        self.record: list[bytes] | None = None    # a list: every valid frame sent goes in
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
        from knute.protocol import stream
        from knute.tools.sim.pktfwd import EU868_CHANNELS_MHZ, rxpk

        with self._lock:
            self.sent += 1
            if valid and device_id is not None:
                self.sent_valid += 1
                from knute.protocol import frame

                _, dev, fcnt, _ = frame.parse_header(payload)
                self.valid_ids.add(f"{dev:08x}:{fcnt}")
                if self.record is not None:
                    self.record.append(payload)
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
        if not self._pty.write(data, patience_s):
            self.local_drops += 1

    def close(self) -> None:
        """Stop and close the links."""
        self.stop()
        for fwd in self._forwarders:
            fwd.close()
        self._pty.close()


# ---------------------------------------------------------------- the common rig


class Rig:
    """Broker, faulty link, backend, fleet and gateway for one delivery case."""

    def __init__(self, workdir: Path, *, meters: int = 60, air: int = 20, rate: float = 200.0,
                 seed: int = 1, spool_path: str | None = None, spool_max_mb: float = 64.0,
                 fsync: str = "normal", broker: Any = None, mqtt_port: int | None = None,
                 mqtt_extra: str = "", log_level: str = "info",
                 fallbacks: Sequence[Any] = ()) -> None:
        from knute.tools.rig.broker import Broker

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.own_broker = broker is None
        # The backend's queue on the broker is unbounded, as docs/mqtt.md advises: with
        # Mosquitto's default (1000 per client) a fast drain overflows it and the broker,
        # not the gateway, drops messages the gateway had delivered.
        self.broker = broker or Broker(make_dir(workdir / "broker"), "mosquitto",
                                       extra_config="max_queued_messages 0\n")
        if self.own_broker:
            self.broker.start()
        self.link = FaultyLink((self.broker.host, mqtt_port or self.broker.port), seed=seed)
        # Fallback brokers (started by the caller): each behind its own fault relay, the
        # backend subscribed to every broker with sessions that outlive a broker stop.
        self.fallback_links = [FaultyLink((b.host, b.port), seed=seed + 1 + n)
                               for n, b in enumerate(fallbacks)]
        self.backend = Backend(self.broker.host, self.broker.port,
                               more=[(b.host, b.port) for b in fallbacks],
                               persistent=bool(fallbacks))
        self.backend.connect()
        self.fleet = FleetDriver(meters, air, seed=seed, rate=rate)
        self.gw = GatewayProc(workdir / "gateway", self.link.port, self.fleet.devices,
                              serial_url=self.fleet.serial_path, udp_port=self.fleet.udp_port,
                              spool_path=spool_path, spool_max_mb=spool_max_mb, fsync=fsync,
                              mqtt_extra=mqtt_extra, log_level=log_level,
                              fallback_ports=[lk.port for lk in self.fallback_links])

    def start_stream(self, timeout: float = 60.0) -> None:
        """Start the gateway and the fleet; return once the first 20 readings are delivered
        (the steady stream a case then disturbs)."""
        self.gw.start()
        self.fleet.start()
        wait_for(lambda: self.backend.delivered() >= 20, timeout, "first deliveries")

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
        if self.link.mode != "relay":   # switching resets every connection, even to relay
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
        result.count_delivery(meta["accepted_total"], meta["evicted_total"],
                              self.backend.delivered(), self.backend.duplicates())
        result.crashes += self.gw.crashes
        result.problems += self.backend.problems(self.fleet.valid_ids)
        late = self.backend.out_of_order()
        if late:
            result.problems.append(f"readings out of counter order through one broker: "
                                   f"{late[:3]}")
        if self.backend.more:
            across = self.backend.reordered_across_brokers()
            result.notes["reordered_across_brokers"] = len(across)
            if across:
                result.notes["reordered_example"] = across[0]
        log = self.gw.log_text()
        result.check_log(log, "the gateway log")
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
        for link in self.fallback_links:
            link.close()
        if self.own_broker:
            self.broker.stop()


def make_dir(path: Path) -> Path:
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

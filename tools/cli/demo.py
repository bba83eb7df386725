"""``knute demo``: a broker, a gateway, a fleet and a live view, in one command.

What runs:
- an MQTT broker on loopback: Mosquitto where installed, else amqtt;
- the gateway (``knute gateway run``) with a serial source on a pty (the
  radio bridge's line) and a packet-forwarder UDP source;
- a simulated fleet of water meters and air nodes sending real encrypted
  frames (tools/sim/fleet.py): odd-numbered nodes over the serial line, the rest
  through two packet forwarders with overlapping coverage, so the gateway
  merges duplicates; a few faults (leaks, bursts, tamper, a failed particle
  sensor, garbage, truncated frames, replays) keep it honest;
- K water meters (``--real-firmware K``, 2 by default) running the real
  firmware on virtual boards, provisioned with ``knute provision``, their UARTs
  wired to a second serial source of the gateway;
- an MQTT subscriber that checks what the backend receives;
- the city's backend (``knute backend run``): it stores every reading, raises
  alerts, computes the air-quality index of the demo's area (every air node is
  a station of ``sentrum``, docs/air.md) and serves its web page, whose URL the
  demo prints. The fleet's water
  meters form two districts, each with a bulk inlet meter that counts its
  households' water and what its pipes lose (tools/sim/bulk_meters.py), so the
  page shows each district's balance and loss. The firmware boards' meters
  belong to no district (the inlets cannot know their water);
- the light sculpture (tools/sim/sculpture.py): the real ``display`` firmware
  on the unix port, its LED strip simulated, following the area index the
  backend publishes retained.

Time is simulated (``--speed``): the gateway stamps what it receives on a clock
that runs at the fleet's pace (``[gateway] clock_speed``), so the backend's
hours, which are reading time, pass as fast as the fleet's and an area index
comes every simulated hour (every 2 s at the default speed). The gateway's
clock starts as the gateway does, the fleet's a moment later when it starts
sending (about 2 s later here): the readings' times run that gap times
``--speed`` (about an hour at the default) ahead of the fleet's model, which
changes no figure the demo checks.

Interactive (a terminal): a rich live view of devices, alarms, spool and
counters; ``o`` stops or restarts the broker to watch the spool fill and drain,
``q`` or Ctrl-C quits. Headless (``--for SECONDS``, with ``--json`` for one JSON
object): runs that long with a broker outage in the middle, stops the fleet,
waits for the spool to drain and prints sent, received, lost (must be 0),
duplicates and alarms, the backend's figures (readings stored, alerts open), the
EAQI band of the backend's last area index (``air_index``, read from its retained
topic; null when none was published or it was withheld) and the strip's final
colour (``display_colour``, ``#rrggbb``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.backend import BackendProcess
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.ptys import HeldPty

if TYPE_CHECKING:
    from knute.tools.sim.firmware_nodes import FirmwareNode
    from knute.tools.sim.sculpture import Sculpture

PREFIX = "knute"
DEMO_DISTRICTS = (("sentrum", "b0000001"), ("nord", "b0000002"))   # name, bulk inlet meter
# What each district's pipes lose between its inlet and its households (share, L/h).
DEMO_LOSSES = ((0.04, 12.0), (0.08, 30.0))
DEMO_FAULTS = ("leak", "burst", "tamper", "sensor", "garbage", "truncated", "replay")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of ``knute demo``."""
    parser.add_argument("--meters", type=int, default=40, help="water meters (default 40)")
    parser.add_argument("--air", type=int, default=6, help="air-quality nodes (default 6)")
    parser.add_argument("--speed", type=float, default=1800.0,
                        help="simulated seconds per real second (default 1800)")
    parser.add_argument("--real-firmware", type=int, default=2, metavar="K",
                        help="also run K water meters on the real firmware in virtual boards "
                        "(default 2)")
    parser.add_argument("--for", dest="duration", type=float, default=None,
                        help="run headless for this many seconds, then print a summary")
    parser.add_argument("--json", action="store_true", help="with --for: one JSON object")
    parser.add_argument("--fault-rate", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep the run's files here (default: a temp dir)")
    parser.add_argument("--web-port", type=int, default=8080,
                        help="the backend's web page on 127.0.0.1:PORT (default 8080; "
                        "any free port when it is taken)")


@dataclass
class Seen:
    """What the backend subscriber has received."""

    ids: dict[str, int] = field(default_factory=dict)          # id -> times received
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> reading
    alarms: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    alarm_readings: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Record one MQTT message."""
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        with self.lock:
            if topic.endswith("/status"):
                self.status = doc
                return
            self.ids[doc["id"]] = self.ids.get(doc["id"], 0) + 1
            if self.ids[doc["id"]] > 1:
                return
            self.last[doc["device"]] = doc
            if doc.get("alarms"):
                self.alarm_readings += 1
                when = time.strftime("%H:%M:%S")
                self.alarms.appendleft(f"{when} {doc['device']} {', '.join(doc['alarms'])}")


class Demo:
    """Every process and thread of one demo run."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from knute.tools.rig.broker import Broker
        from knute.tools.sim.fleet import Fleet

        self.args = args
        self.workdir = workdir
        # Persistent, as a production broker is: the backend's session and its
        # queued QoS 1 messages survive the outage the demo stages.
        self.broker = Broker(workdir / "broker", None, persistent=True)
        self.start_time = time.time()
        self.clock_start = self.start_time     # the gateway's simulated clock starts here
        self.fleet = Fleet(args.meters, args.air, start=self.start_time, seed=args.seed,
                           faults=DEMO_FAULTS, fault_rate=args.fault_rate)
        self.districts = self._add_districts()
        self.expected: set[str] = set()
        self.sent_total = 0
        self.seen = Seen()
        self.stop_fleet = threading.Event()
        # Its own session: a Ctrl-C in the terminal reaches the demo, which stops it.
        self.gateway = GatewayProcess(workdir, new_session=True)
        self.backend = BackendProcess(workdir / "backend", new_session=True)
        self.boards: list[FirmwareNode] = []
        self.sculpture: Sculpture | None = None
        self._threads: list[threading.Thread] = []
        self._mqtt: Any = None
        self._pty: HeldPty | None = None
        self._forwarders: list[Any] = []
        self.events: deque[str] = deque(maxlen=6)

    # ------------------------------------------------------------ start-up
    def start(self) -> None:
        """Start broker, gateway, subscriber and fleet."""
        from knute.gateway import registry

        (self.workdir / "broker").mkdir(parents=True, exist_ok=True)
        self.broker.start()
        self.event(f"broker: {self.broker.kind} on {self.broker.host}:{self.broker.port}")
        reg = registry.Registry(str(self.workdir / "registry.db"))
        try:
            for node in self.fleet.nodes:
                reg.add(node.device_id, node.kind, node.key, name=f"sim-{node.device_id:08x}",
                        site="demo")
        finally:
            reg.close()
        self._open_links()
        if self.args.real_firmware:
            self._start_real_firmware()
            self._queue_downlinks()
        # Subscribed before the gateway runs: its session holds every reading published.
        self._start_backend()
        self._start_gateway()
        for board in self.boards:
            board.run()
        self._start_subscriber()
        self._start_sculpture()
        sender = threading.Thread(target=self._send_loop, name="demo-fleet", daemon=True)
        sender.start()
        self._threads.append(sender)

    def event(self, text: str) -> None:
        """A line for the live view's event log."""
        self.events.appendleft(f"{time.strftime('%H:%M:%S')} {text}")

    def _open_links(self) -> None:
        from knute.tools.rig.broker import free_port
        from knute.tools.sim.pktfwd import ForwarderClient

        self._pty = HeldPty()  # held open so the line survives gateway restarts
        self.serial_path = self._pty.path
        self.udp_port = free_port()
        for n in range(2):
            eui = bytes.fromhex("aa555a00000000") + bytes((n,))
            self._forwarders.append(ForwarderClient(eui, "127.0.0.1", self.udp_port))

    def _gateway_config(self) -> str:
        serial = [("bridge", self.serial_path)]
        serial += [(f"firmware-{i}", b.uart_path) for i, b in enumerate(self.boards)]
        tables = "".join(
            f'\n[[serial]]\nname = "{name}"\nurl = "{url}"\nbaudrate = 115200\n'
            "reopen_min_s = 0.2\nreopen_max_s = 2\n" for name, url in serial)
        return f"""
[gateway]
id = "demo"
data_dir = "{self.workdir}"
registry = "registry.db"
log_level = "warning"
# The fleet's pace: readings carry simulated time, so the backend's hours pass.
clock_speed = {self.args.speed}
clock_start = {self.clock_start:.3f}

[spool]
path = "spool.db"
max_mb = 64
max_age_days = 30
fsync = "normal"

[status]
socket = "{self.gateway.status_socket}"

[mqtt]
host = "{self.broker.host}"
port = {self.broker.port}
protocol = "5"
prefix = "{PREFIX}"
keepalive = 5
max_inflight = 50
{tables}
[[packet_forwarder]]
name = "concentrators"
listen = "127.0.0.1:{self.udp_port}"
"""

    def _start_gateway(self) -> None:
        # As late as may be: the fleet's clock starts when it starts sending, right after.
        self.clock_start = time.time()
        self.gateway.write_config(self._gateway_config())
        self.gateway.start(wait_sources=False)
        self.event("gateway: running")

    def _start_subscriber(self) -> None:
        from knute.tools.rig.subscriber import Subscriber

        self._mqtt = Subscriber(
            self.broker.host, self.broker.port,
            [f"{PREFIX}/+/+/up", f"{PREFIX}/gateway/+/status"], client_id="knute-demo-backend",
            clean_session=False, keepalive=5,
            on_message=lambda m: self.seen.on_message(m.topic, m.payload))

    def _add_districts(self) -> list[tuple[str, str, list[str]]]:
        """Split the fleet's water meters in two districts, each with its bulk inlet meter."""
        from knute.tools.sim.bulk_meters import Loss, add_inlets
        from knute.tools.sim.fleet import MeterNode

        meters = sorted((n for n in self.fleet.nodes if isinstance(n, MeterNode)),
                        key=lambda n: n.device_id)
        half = (len(meters) + 1) // 2
        parts = (meters[:half], meters[half:])
        add_inlets(self.fleet, [(int(inlet, 16), part, Loss(*loss)) for (_, inlet), part, loss
                                in zip(DEMO_DISTRICTS, parts, DEMO_LOSSES, strict=True)
                                if part], self.start_time)
        return [(name, inlet, [f"{n.device_id:08x}" for n in part])
                for (name, inlet), part in zip(DEMO_DISTRICTS, parts, strict=True) if part]

    def _start_sculpture(self) -> None:
        from knute.tools.sim.sculpture import Sculpture

        self.sculpture = Sculpture(self.workdir / "sculpture", self.broker.host,
                                   self.broker.port, PREFIX)
        self.sculpture.start()
        self.event(f"sculpture: display node following {self.sculpture.topic}")

    def _backend_config(self) -> str:
        from knute.tools.sim.fleet import WATER_SEND_EVERY_S
        from knute.tools.sim.sculpture import AREA

        districts = "".join(
            f'\n[[district]]\nname = "{name}"\ninflow = ["{inlet}"]\n'
            f"households = {json.dumps(part)}\n" for name, inlet, part in self.districts)
        # A meter sends every 6 simulated hours: that many real seconds at this speed.
        interval = max(1.0, WATER_SEND_EVERY_S / self.args.speed)
        stations = sorted(f"{n.device_id:08x}" for n in self.fleet.nodes
                          if n.kind == "air_quality")
        air = (f'\n[air]\nscale = "eaqi"\n\n[[air_area]]\nname = "{AREA}"\n'
               f"stations = {json.dumps(stations)}\n" if stations else "")
        return f"""
[mqtt]
host = "{self.broker.host}"
port = {self.broker.port}
client_id = "knute-backend"
prefix = "{PREFIX}"
protocol = "{"5" if self.broker.kind == "mosquitto" else "3.1.1"}"
keepalive_s = 5

[store]
path = "backend.sqlite"

[water]
expected_interval_s = {interval:.3f}
evaluate_every_s = 2

[web]
host = "127.0.0.1"
port = {_web_port(self.args.web_port)}
{air}{districts}"""

    def _start_backend(self) -> None:
        self.backend.write_config(self._backend_config())
        url = self.backend.start()
        self.event(f"backend: web page at {url}")
        print(f"knute demo: the backend's web page is at {url}", file=sys.stderr, flush=True)

    def _start_real_firmware(self) -> None:
        from knute.tools.sim.firmware_nodes import start_boards

        self.boards = start_boards(self.args.real_firmware, self.workdir / "boards",
                                   str(self.workdir / "registry.db"), self.start_time,
                                   self.args.speed)
        self.event(f"firmware: {len(self.boards)} virtual boards provisioned: "
                   + ", ".join(f"{b.device_id:08x}" for b in self.boards))

    def _queue_downlinks(self) -> None:
        """Set the clock of, and change one setting on, the first firmware board: the
        gateway sends both after the board's first uplink and follows them to applied."""
        from knute.gateway.downlinks import DownlinkStore

        if not self.boards:
            return
        board = self.boards[0]
        store = DownlinkStore(str(self.workdir / "registry.db"))
        try:
            store.queue(board.device_id, "time", ref="demo-clock")
            store.queue(board.device_id, "config", {"values": {"4": 6}}, ref="demo-leak-hours")
        finally:
            store.close()
        self.event(f"downlinks: clock and water.leak_hours=6 queued for {board.device_id:08x}")

    # ------------------------------------------------------------ running
    def _send_loop(self) -> None:
        from knute.protocol import stream
        from knute.tools.sim.pktfwd import node_links

        rng = self.fleet.rng
        links = node_links()
        wall0 = time.monotonic()
        while not self.stop_fleet.is_set():
            now = self.start_time + (time.monotonic() - wall0) * self.args.speed
            for tx in self.fleet.due(now):
                self.sent_total += 1
                if tx.valid and tx.node is not None:
                    self.expected.add(f"{tx.node.device_id:08x}:{tx.node.fcnt - 1}")
                if tx.node is not None and tx.node.device_id % 2:
                    self._serial_write(stream.encode_record(stream.REC_FRAME, tx.payload))
                elif tx.node is None:
                    rng.choice(self._forwarders).send_raw(tx.payload)
                else:
                    # The node's own SF (from its link budget) on a channel of the plan.
                    hearing = rng.sample(self._forwarders, rng.randint(1, 2))
                    copies = links[tx.node.device_id].heard_by(tx.payload, rng, len(hearing))
                    for fwd, pkt in zip(hearing, copies, strict=True):
                        fwd.push([pkt])
            for fwd in self._forwarders:
                fwd.keepalive()
                fwd.read_acks()
            wait = (self.fleet.next_time() - now) / self.args.speed
            self.stop_fleet.wait(min(max(wait, 0.002), 0.1))

    def _serial_write(self, data: bytes) -> None:
        if self._pty is not None:
            self._pty.write(data, patience_s=1.0)

    def gateway_status(self) -> dict[str, Any]:
        """The gateway's live counters, or {} when it does not answer."""
        return self.gateway.try_status()

    def toggle_broker(self) -> None:
        """Stop the broker if it runs, else start it again on the same port."""
        if self.broker.running:
            self.broker.stop()
            self.event("broker: STOPPED - the gateway spools")
        else:
            self.broker.start()
            self.event("broker: back - the spool drains")

    def all_expected(self) -> set[str]:
        """Ids of every valid frame sent: the simulated fleet's and the firmware's."""
        expected = set(self.expected)
        for board in self.boards:
            expected |= board.expected_ids()
        return expected

    def missing(self) -> set[str]:
        """Ids sent (and valid) that the subscriber has not received yet."""
        expected = self.all_expected()
        with self.seen.lock:
            return expected - self.seen.ids.keys()

    def drain(self, timeout_s: float) -> None:
        """Stop the fleet and wait until everything valid has arrived (or timeout)."""
        self.stop_fleet.set()
        for t in self._threads:
            t.join(timeout=5)
        # The firmware nodes stop too: what they reported sent until now is what
        # must arrive (a frame reported a moment later would race the check).
        for board in self.boards:
            board.stop_board()
        deadline = time.monotonic() + timeout_s
        while self.missing() and time.monotonic() < deadline:
            time.sleep(0.2)
        # The backend stores what the subscriber received (its own session, same readings).
        with self.seen.lock:
            received = len(self.seen.ids)
        while (self.backend.try_summary().get("readings", 0) < received
               and time.monotonic() < deadline):
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop everything this run started."""
        self.stop_fleet.set()
        self.gateway.stop(timeout=15)
        self.gateway.close()
        self.backend.stop()
        if self.sculpture is not None:
            self.sculpture.stop()
        for board in self.boards:
            with contextlib.suppress(Exception):
                board.close()
        if self._mqtt is not None:
            self._mqtt.close()
        for fwd in self._forwarders:
            fwd.close()
        if self._pty is not None:
            self._pty.close()
        self.broker.stop()

    def summary(self) -> dict[str, Any]:
        """The headless run's figures."""
        with self.seen.lock:
            received = len(self.seen.ids)
            duplicates = sum(n - 1 for n in self.seen.ids.values())
            alarms = self.seen.alarm_readings
        backend = self.backend.try_summary(timeout=10)
        counters = backend.get("counters", {})
        totals = self.gateway_status().get("totals", {})
        sculpture = self.sculpture
        if sculpture is not None:
            sculpture.settle(timeout_s=15)
        return {"air_index": sculpture.band if sculpture else None,
                "display_colour": sculpture.colour() if sculpture else None,
                "sent": len(self.all_expected()), "received": received,
                "lost": len(self.missing()),
                "duplicates": duplicates, "alarms": alarms,
                "downlinks_sent": int(totals.get("downlinks_sent", 0)),
                "downlinks_applied": int(totals.get("downlinks_applied", 0)),
                "backend": {"url": self.backend.url, "readings": backend.get("readings"),
                            "meters": backend.get("meters"),
                            "alerts_open": backend.get("alerts_open"),
                            "duplicates": counters.get("duplicate", 0),
                            "bad": counters.get("bad", 0)}}


def _web_port(wanted: int) -> int:
    """``wanted`` when it can be had on 127.0.0.1, else 0 (the backend takes any free port)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            return 0
    return wanted


def _headless(demo: Demo, duration: float, quiet: bool) -> dict[str, Any]:
    outage_at, outage_for = duration / 3, min(duration / 6, 10.0)
    end = time.monotonic() + duration
    t0 = time.monotonic()
    outage_done = False
    while time.monotonic() < end:
        elapsed = time.monotonic() - t0
        if not outage_done and elapsed >= outage_at and demo.broker.running:
            demo.toggle_broker()
        elif not outage_done and elapsed >= outage_at + outage_for:
            demo.toggle_broker()
            outage_done = True
        time.sleep(0.1)
        if not quiet and int(elapsed) % 5 == 0 and elapsed % 5 < 0.1:
            st = demo.gateway_status()
            print(f"{int(elapsed):>4} s  sent {len(demo.all_expected())}  received "
                  f"{len(demo.seen.ids)}  spool {st.get('spool', {}).get('depth', '?')}",
                  file=sys.stderr)
    if not demo.broker.running:
        demo.toggle_broker()
    demo.drain(timeout_s=60)
    return demo.summary()


def run(args: argparse.Namespace) -> int:
    """Run the demo: live view on a terminal, or headless with --for."""
    if args.meters < 0 or args.air < 0 or args.meters + args.air == 0:
        raise KnuteError("--meters and --air: at least one node")
    if args.duration is None and not sys.stdin.isatty():
        # `make demo` from a script or CI: no keys to press, so run the headless tour.
        print("knute demo: no terminal for the live view; running headless for 30 s",
              file=sys.stderr)
        args.duration = 30.0
    interactive = args.duration is None
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="knute-demo-")
    workdir = Path(args.workdir or tmp.name if tmp else args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(args, workdir)

    def _interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # A closed terminal (SIGHUP) or a kill (SIGTERM) must still stop the gateway
    # and broker this run started; the gateway itself takes SIGHUP as "reload".
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        demo.start()
        if interactive:
            from knute.tools.cli.demo_view import live_view

            live_view(demo)
            return 0
        result = _headless(demo, args.duration, quiet=args.json)
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop()
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        city = result["backend"]
        print(f"sent {result['sent']} valid frames, the backend received {result['received']}"
              f" ({result['duplicates']} duplicates), lost {result['lost']}, "
              f"{result['alarms']} readings with alarms; the backend stored "
              f"{city['readings']} readings, {city['alerts_open']} alerts open "
              f"({city['url']}); the sculpture shows {result['display_colour']} for "
              f"area index level {result['air_index']}")
    return 0 if result["lost"] == 0 else 1

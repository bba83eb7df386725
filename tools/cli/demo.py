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
- an MQTT subscriber that checks what the backend receives.

Interactive (a terminal): a rich live view of devices, alarms, spool and
counters; ``o`` stops or restarts the broker to watch the spool fill and drain,
``q`` or Ctrl-C quits. Headless (``--for SECONDS``, with ``--json`` for one JSON
object): runs that long with a broker outage in the middle, stops the fleet,
waits for the spool to drain and prints sent, received, lost (must be 0),
duplicates and alarms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.ptys import HeldPty

if TYPE_CHECKING:
    from knute.tools.sim.firmware_nodes import FirmwareNode

PREFIX = "knute"
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
        self.fleet = Fleet(args.meters, args.air, start=self.start_time, seed=args.seed,
                           faults=DEMO_FAULTS, fault_rate=args.fault_rate)
        self.expected: set[str] = set()
        self.sent_total = 0
        self.seen = Seen()
        self.stop_fleet = threading.Event()
        # Its own session: a Ctrl-C in the terminal reaches the demo, which stops it.
        self.gateway = GatewayProcess(workdir, new_session=True)
        self.boards: list[FirmwareNode] = []
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
        self._start_gateway()
        for board in self.boards:
            board.run()
        self._start_subscriber()
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
        self.gateway.write_config(self._gateway_config())
        self.gateway.start(wait_sources=False)
        self.event("gateway: running")

    def _start_subscriber(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="knute-demo-backend",
                             protocol=mqtt.MQTTv311, clean_session=False)

        def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            c.subscribe([(f"{PREFIX}/+/+/up", 1), (f"{PREFIX}/gateway/+/status", 1)])

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            self.seen.on_message(msg.topic, msg.payload)

        client.on_connect = on_connect
        client.on_message = on_message
        client.reconnect_delay_set(1, 2)
        client.connect(self.broker.host, self.broker.port, keepalive=5)
        client.loop_start()
        self._mqtt = client
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _start_real_firmware(self) -> None:
        from knute.tools.sim.firmware_nodes import start_boards

        self.boards = start_boards(self.args.real_firmware, self.workdir / "boards",
                                   str(self.workdir / "registry.db"), self.start_time,
                                   self.args.speed)
        self.event(f"firmware: {len(self.boards)} virtual boards provisioned: "
                   + ", ".join(f"{b.device_id:08x}" for b in self.boards))

    # ------------------------------------------------------------ running
    def _send_loop(self) -> None:
        from knute.protocol import stream
        from knute.tools.sim.pktfwd import EU868_CHANNELS_MHZ, rxpk

        rng = self.fleet.rng
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
                    chan = rng.randrange(3)
                    for fwd in rng.sample(self._forwarders, rng.randint(1, 2)):
                        fwd.push([rxpk(tx.payload, rssi_dbm=rng.randint(-124, -80),
                                       lsnr_db=round(rng.uniform(-10, 8), 1),
                                       freq_mhz=EU868_CHANNELS_MHZ[chan],
                                       sf=rng.choice([7, 9, 12]), chan=chan)])
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

    def stop(self) -> None:
        """Stop everything this run started."""
        self.stop_fleet.set()
        self.gateway.stop(timeout=15)
        self.gateway.close()
        for board in self.boards:
            with contextlib.suppress(Exception):
                board.close()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
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
        return {"sent": len(self.all_expected()), "received": received,
                "lost": len(self.missing()),
                "duplicates": duplicates, "alarms": alarms}


# ---------------------------------------------------------------- views

def _reading_text(doc: dict[str, Any]) -> str:
    readings = doc.get("readings", {})
    if doc.get("kind") == "water_meter":
        index = readings.get("index", {}).get("value")
        last = (doc.get("profile") or [{}])[-1].get("litres")
        return f"index {index} L, last hour {last} L"
    parts = []
    for name, label in (("pm2_5", "PM2.5"), ("pm10", "PM10"), ("temperature", "T")):
        value = readings.get(name, {}).get("value")
        unit = readings.get(name, {}).get("unit", "")
        parts.append(f"{label} {'-' if value is None else value}{unit}")
    return ", ".join(parts)


def _render(demo: Demo) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    st = demo.gateway_status()
    totals = st.get("totals", {})
    spool = st.get("spool", {})
    fwd = st.get("forwarder", {})
    with demo.seen.lock:
        last = sorted(demo.seen.last.values(), key=lambda d: d.get("received_at", ""),
                      reverse=True)[:12]
        alarms = list(demo.seen.alarms)
        received = len(demo.seen.ids)
    devices = Table(title="latest readings at the backend", expand=True)
    for col in ("device", "kind", "fcnt", "reading", "alarms", "heard by"):
        devices.add_column(col)
    for doc in last:
        devices.add_row(doc["device"], doc["kind"], str(doc["fcnt"]), _reading_text(doc),
                        ", ".join(doc.get("alarms", [])) or "-",
                        str(len(doc.get("receivers", []))))
    counters = Table.grid(padding=(0, 2))
    counters.add_row("broker", "[green]up" if demo.broker.running else "[red]DOWN",
                     "mqtt", str(fwd.get("state", "?")))
    counters.add_row("sent (valid)", str(len(demo.all_expected())), "received", str(received))
    counters.add_row("gateway accepted", str(totals.get("accepted", 0)),
                     "merged duplicates", str(totals.get("merged", 0)))
    counters.add_row("rejected", str(totals.get("rejected", 0)),
                     "forwarded", str(totals.get("forwarded", 0)))
    counters.add_row("spool depth", str(spool.get("depth", 0)),
                     "evicted", str(totals.get("evicted", 0)))
    rejected = st.get("rejected", {})
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
    sim_h = (time.time() - demo.start_time) * demo.args.speed / 3600
    return Group(
        Panel(counters, title=f"knute demo - {sim_h:.1f} simulated hours - "
              r"\[o] broker outage  \[q] quit"),
        devices,
        Panel("\n".join(alarms) or "none yet", title="alarms"),
        Panel(f"rejected by reason: {reasons}\n" + "\n".join(demo.events), title="events"),
    )


def _live(demo: Demo) -> None:
    import termios
    import tty

    from rich.live import Live

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        with Live(_render(demo), refresh_per_second=2, screen=False) as live:
            while True:
                ready, _, _ = select.select([sys.stdin], [], [], 0.5)
                if ready:
                    key = sys.stdin.read(1).lower()
                    if key == "q":
                        break
                    if key == "o":
                        demo.toggle_broker()
                live.update(_render(demo))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


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
            _live(demo)
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
        print(f"sent {result['sent']} valid frames, the backend received {result['received']}"
              f" ({result['duplicates']} duplicates), lost {result['lost']}, "
              f"{result['alarms']} readings with alarms")
    return 0 if result["lost"] == 0 else 1

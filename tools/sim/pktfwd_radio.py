"""A simulated concentrator between bench LoRa nodes and a gateway's packet-forwarder port.

It reads the uplink lines bench nodes append to their radio files
(``RX <rssi> <snr> <hex> <end_ms> [<freq_hz> <sf>]``, docs/firmware.md), sends
each packet to the gateway as PUSH_DATA on the channel and SF its line names
(the node's configured ones for a line without them), keeps the PULL_DATA
keep-alive going, and turns the gateway's PULL_RESP downlinks into
``TX <start_ms> <freq_hz> <sf> <hex>`` lines in the addressed node's
``rx_path``, answering each with TX_ACK (Semtech UDP protocol v2).

Timing: the concentrator's microsecond counter is the node's bench clock, so
an uplink that ended at ``end_ms`` is reported with ``tmst`` = ``end_ms`` × 1000
mod 2^32, and a ``txpk`` with ``tmst`` T starts at ``end_ms`` + ((T − tmst) mod
2^32) / 1000 of that node's clock, whatever the bench's time scale. ``time``
(the "RX finished" UTC time a GPS-locked concentrator adds) is the real time at
which the line was read: a node whose own clock is wrong still gets the right
time from the gateway's clock answer.

TX_ACK errors, as a concentrator's just-in-time queue gives them: ``TOO_LATE``
(start before the uplink's end), ``TOO_EARLY`` (more than ``MAX_AHEAD_US``
ahead), ``COLLISION_PACKET`` (another downlink already holds that start),
``TX_FREQ`` (outside 863-870 MHz), ``TX_POWER`` (above 27 dBm), and
``INVALID`` for a txpk that cannot be read (no ``tmst`` nor ``imme``, bad
``datr`` or ``data``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from knute.tools.sim.pktfwd import PROTOCOL_VERSION, PULL_RESP, pull_data, push_data

TX_ACK = 0x05
MAX_AHEAD_US = 3_000_000        # the JIT queue takes downlinks at most 3 s ahead
WRAP = 1 << 32


@dataclass
class NodeRadio:
    """One bench node's radio files and its uplink channel."""

    path: str                   # its uplink lines (bench radio "path")
    rx_path: str                # where its downlinks go (bench radio "rx_path")
    freq_hz: int = 868100000
    sf: int = 9
    offset: int = 0             # bytes of ``path`` read so far
    last: tuple[int, int] | None = None   # (end_ms, tmst) of its last uplink
    taken: set[int] = field(default_factory=set)  # start_ms of downlinks written


def tmst_of(end_ms: int) -> int:
    """The concentrator counter of an uplink that ended at ``end_ms`` (bench clock)."""
    return (end_ms * 1000) % WRAP


def iso_now() -> str:
    """The current UTC time as a packet forwarder writes ``time``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


class RadioConcentrator:
    """One simulated concentrator serving bench nodes (call ``step`` in a loop)."""

    def __init__(self, host: str, port: int, nodes: list[NodeRadio],
                 eui: bytes = bytes.fromhex("aa555a0000000b01"), pull_every_s: float = 5.0
                 ) -> None:
        self.addr = (host, port)
        self.eui = eui
        self.nodes = nodes
        self.pull_every_s = pull_every_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self._by_device: dict[int, NodeRadio] = {}
        self._last_pull = 0.0
        self.pushed = 0
        self.downlinks = 0          # TX lines written
        self.tx_errors: dict[str, int] = {}

    def step(self) -> None:
        """Keep-alive, new uplink lines, downlinks that arrived."""
        now = time.monotonic()
        if now - self._last_pull >= self.pull_every_s:
            self._last_pull = now
            self.sock.sendto(pull_data(self.eui), self.addr)
        for node in self.nodes:
            self._read_uplinks(node)
        self._read_answers()

    def _read_uplinks(self, node: NodeRadio) -> None:
        try:
            with open(node.path, "rb") as fh:
                fh.seek(node.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        node.offset += end + 1
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) not in (5, 7) or parts[0] != "RX":
                continue
            try:
                rssi, snr = int(parts[1]), float(parts[2])
                payload, end_ms = bytes.fromhex(parts[3]), int(parts[4])
                freq_hz, sf = node.freq_hz, node.sf
                if len(parts) == 7:     # the channel and SF the node hopped to
                    freq_hz, sf = int(parts[5]), int(parts[6])
            except ValueError:
                continue
            if len(payload) >= 8:
                device = int.from_bytes(payload[1:5], "big")
                self._by_device[device] = node
            tmst = tmst_of(end_ms)
            node.last = (end_ms, tmst)
            pkt = {"time": iso_now(), "tmst": tmst, "chan": 0, "rfch": 0,
                   "freq": freq_hz / 1e6, "stat": 1, "modu": "LORA",
                   "datr": f"SF{sf}BW125", "codr": "4/5", "rssi": rssi, "lsnr": snr,
                   "size": len(payload), "data": base64.b64encode(payload).decode()}
            self.sock.sendto(push_data(self.eui, [pkt]), self.addr)
            self.pushed += 1

    def _read_answers(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return
            if len(data) > 4 and data[0] == PROTOCOL_VERSION and data[3] == PULL_RESP:
                error = self._downlink(data[4:])
                if error != "NONE":
                    self.tx_errors[error] = self.tx_errors.get(error, 0) + 1
                ack = json.dumps({"txpk_ack": {"error": error}}).encode()
                self.sock.sendto(bytes((PROTOCOL_VERSION,)) + data[1:3] + bytes((TX_ACK,))
                                 + self.eui + ack, self.addr)

    def _downlink(self, body: bytes) -> str:
        """Write one PULL_RESP's packet to its node's rx file; the TX_ACK error."""
        try:
            txpk = json.loads(body)["txpk"]
            payload = base64.b64decode(txpk["data"], validate=True)
            freq_hz = round(float(txpk["freq"]) * 1e6)
            datr = str(txpk["datr"])
            sf = int(datr[2:datr.index("BW")])
            power = int(txpk.get("powe", 14))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return "INVALID"
        if not 863_000_000 <= freq_hz <= 870_000_000:
            return "TX_FREQ"
        if power > 27:
            return "TX_POWER"
        node = self._by_device.get(int.from_bytes(payload[1:5], "big")) if len(payload) > 5 \
            else None
        if node is None or node.last is None:
            return "INVALID"
        end_ms, tmst = node.last
        if txpk.get("imme"):
            start_ms = end_ms
        else:
            if not isinstance(txpk.get("tmst"), int):
                return "INVALID"
            ahead = (txpk["tmst"] - tmst) % WRAP
            if ahead >= WRAP // 2:
                return "TOO_LATE"
            if ahead > MAX_AHEAD_US:
                return "TOO_EARLY"
            start_ms = end_ms + ahead // 1000
        if start_ms in node.taken:
            return "COLLISION_PACKET"
        node.taken.add(start_ms)
        with open(node.rx_path, "a") as fh:
            fh.write(f"TX {start_ms} {freq_hz} {sf} {payload.hex()}\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.downlinks += 1
        return "NONE"

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class ConcentratorThread:
    """Concentrators stepped every 10 ms on a daemon thread, from ``start`` until
    ``stop``: the way tests run them beside a real gateway."""

    def __init__(self, *concs: RadioConcentrator) -> None:
        self.concs = concs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concentrator", daemon=True)

    def start(self) -> None:
        """Start stepping."""
        self._thread.start()

    def stop(self) -> None:
        """Stop stepping (waiting up to 5 s for the step under way); the caller closes
        the concentrators."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for conc in self.concs:
                conc.step()

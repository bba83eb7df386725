"""The ``udp_flood`` case of ``knute bench reliability``: a packet-forwarder port under a flood.

The Semtech UDP protocol has no authentication: anyone who reaches the port
can send anything, spoofed gateway EUIs included. This case runs the real
gateway (``knute gateway run``, Mosquitto, the backend subscriber of the
reliability rig) and sends the same legitimate traffic twice, in one run:

1. baseline: a packet forwarder pushes genuine frames of registered devices
   at ``legit_rate`` frames a second, and nothing else reaches the port;
2. flood: the same forwarder pushes as many new genuine frames at the same
   rate while a separate process floods the port from ``senders`` other
   addresses (127.0.0.2, 127.0.0.3, ...; the forwarder is 127.0.0.1) at
   ``rate`` datagrams a second (0: as fast as it can), every datagram with a
   new gateway EUI: PUSH_DATA naming a new unregistered device each,
   PUSH_DATA with forged frames of registered devices (they cost a tag
   check), PULL_DATA keep-alives and short or wrong-version datagrams.

Figures (the row's ``notes``): legitimate frames sent and accepted in each
phase (``legit_*``), flood datagrams sent and the rate reached, datagrams the
gateway read and shed, the datagrams its receive buffer dropped because it
could not read them in time (``kernel_dropped``: on loopback nothing else is
lost), the CPU seconds it used during the flood, its resident memory before
and after the flood and its peak, the bytes its log grew by during the flood,
and the size of its status reply. A phase's frames count as accepted when the
backend received them (the rig drains the spool to the broker before it
counts).

The case fails (``problems``) when a legitimate frame sent during the flood is
not accepted although every datagram was read (the gateway itself dropped it;
when the kernel dropped datagrams, it chose which, and the figures say how
many genuine frames got through), when the log grew by more than
``MAX_LOG_BYTES`` or when the status reply is larger than ``MAX_STATUS_BYTES``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from knute.tools.bench.reliability.results import CaseResult

LEGIT_EUI = bytes.fromhex("aa555a00000000f1")
MAX_LOG_BYTES = 64 * 1024          # what the log may grow by during the flood
MAX_STATUS_BYTES = 64 * 1024       # the status reply, whatever the flood did
POOL = 2048                        # distinct flood datagrams, cycled (EUIs differ anyway)


# ---------------------------------------------------------------- the flood (a process)


def flood_pool(rng: random.Random, genuine: Sequence[bytes],
               n: int = POOL) -> list[tuple[bytearray, int]]:
    """``n`` flood datagrams, each with the offset of its frame's base64 text when the
    frame names an unregistered device (else -1). At each send the gateway EUI (bytes
    4..11) and that device id are rewritten, so every datagram is a new EUI and device."""
    def push(buf: bytes) -> bytes:
        body = json.dumps({"rxpk": [{"tmst": rng.randrange(1 << 32), "chan": 0, "rfch": 0,
                                     "freq": 868.1, "stat": 1, "modu": "LORA",
                                     "datr": "SF9BW125", "codr": "4/5", "rssi": -90,
                                     "lsnr": 5.0, "size": len(buf),
                                     "data": base64.b64encode(buf).decode()}]},
                          separators=(",", ":")).encode()
        return struct.pack(">BHB", 2, rng.randrange(65536), 0) + bytes(8) + body

    pool: list[tuple[bytearray, int]] = []
    for i in range(n):
        pick = i % 10
        good = genuine[rng.randrange(len(genuine))]
        at = -1
        if pick < 4:        # a genuine-looking frame of an unregistered device
            buf = good[:1] + rng.randrange(1 << 32).to_bytes(4, "big") + good[5:]
            dgram = push(buf)
            at = dgram.index(b'"data":"') + 8
        elif pick < 6:      # a registered device's frame with a forged tag
            dgram = push(good[:-1] + bytes((good[-1] ^ 0x5A,)))
        elif pick < 9:      # PULL_DATA keep-alive
            dgram = struct.pack(">BHB", 2, rng.randrange(65536), 2) + bytes(8)
        else:               # wrong version or too short
            dgram = rng.choice((b"\x01\x00\x00\x00" + bytes(8) + b"{}", b"\x02\x00"))
        pool.append((bytearray(dgram), at))
    return pool


def flood_main(argv: Sequence[str] | None = None) -> int:
    """The flood process: ``HOST PORT SECONDS RATE SENDERS SEED FRAMES_FILE``.

    Prints ``ready`` once its datagrams are built, floods for SECONDS (or
    until stdin closes), then prints one JSON line: ``{"sent": n, "seconds": s}``.
    """
    host, port, seconds, rate, senders, seed, frames_file = (argv or sys.argv[1:])[:7]
    addr = (host, int(port))
    genuine = [bytes.fromhex(line) for line in Path(frames_file).read_text().split()]
    rng = random.Random(int(seed))
    pool = flood_pool(rng, genuine)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(int(senders))]
    for n, sock in enumerate(socks):
        sock.setblocking(False)
        # Each sender is another host than the concentrator (127.0.0.1): 127.0.0.2, ...
        sock.bind((f"127.0.0.{2 + n % 250}", 0))
    per_ms = float(rate) / 1000.0
    print("ready", flush=True)
    sent = 0
    failed = 0                   # sendto() refused locally: never on the wire
    eui = rng.randrange(1 << 63)
    started = time.monotonic()
    deadline = started + float(seconds)
    credit = 0.0
    last = started
    n_socks = len(socks)
    n_pool = len(pool)
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if per_ms > 0:
            credit += (now - last) * 1000.0 * per_ms
            last = now
            if credit < 1.0:
                time.sleep(0.001)
                continue
            burst = int(credit)
            credit -= burst
        else:
            burst = 256
        for _ in range(burst):
            dgram, at = pool[sent % n_pool]
            eui += 1
            if len(dgram) >= 12:
                struct.pack_into(">Q", dgram, 4, eui & 0xFFFFFFFFFFFFFFFF)
            if at >= 0:       # frame bytes 0..5 are base64 characters 0..7: a new device id
                head = base64.b64decode(dgram[at:at + 8])
                dgram[at:at + 8] = base64.b64encode(head[:1] + struct.pack(
                    ">I", (eui * 2654435761) & 0xFFFFFFFF) + head[5:])
            sent += 1
            try:
                socks[sent % n_socks].sendto(dgram, addr)
            except OSError:      # full send buffer, or ICMP unreachable: keep going
                failed += 1
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent - failed, "seconds": round(elapsed, 3)}), flush=True)
    for sock in socks:
        sock.close()
    return 0


class Flood:
    """The flood process (a separate interpreter, so it does not share the GIL)."""

    def __init__(self, port: int, seconds: float, rate: float, senders: int, seed: int,
                 genuine: Sequence[bytes], workdir: Path) -> None:
        frames_file = workdir / "flood-frames.txt"
        frames_file.write_text("\n".join(buf.hex() for buf in genuine))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "127.0.0.1", str(port),
             str(seconds), str(rate), str(senders), str(seed), str(frames_file)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            cwd=str(Path(__file__).resolve().parents[3]))
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if first != "ready":
            self.proc.kill()
            raise RuntimeError(f"the flood process did not start: {first!r}")

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the flood to end; its figures."""
        out, _ = self.proc.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else {"sent": 0, "seconds": 0.0}

    def kill(self) -> None:
        """Stop it now (on the way out of a failed case)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---------------------------------------------------------------- the case


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _settled(gw: Any, quiet_s: float = 0.5, timeout: float = 30.0) -> bool:
    """Wait until the gateway has read what its receive buffer holds (its datagram
    count stops moving); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = int(gw.status()["sources"].get("udp", {}).get("datagrams", 0))
        if now == last:
            return True
        last = now
        time.sleep(quiet_s)
    return False


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send_legit(fwd: Any, frames: Sequence[bytes], rate: float) -> None:
    """Push ``frames`` one per PUSH_DATA at ``rate`` a second, reading the acks."""
    from knute.tools.sim.pktfwd import rxpk

    interval = 1.0 / rate
    next_at = time.monotonic()
    for buf in frames:
        fwd.push([rxpk(buf, rssi_dbm=-95, lsnr_db=4.5, freq_mhz=868.3, sf=9, chan=1)])
        fwd.keepalive(5.0)
        fwd.read_acks()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def case_udp_flood(workdir: Path, *, flood_s: float = 20.0, rate: float = 0.0,
                   senders: int = 8, legit_rate: float = 20.0, seed: int = 12) -> CaseResult:
    """Genuine frames through the packet-forwarder port without and during a flood.

    ``flood_s`` seconds of flood at ``rate`` datagrams a second (0: as fast as
    one process can send) from ``senders`` sockets; the genuine forwarder sends
    ``flood_s * legit_rate`` frames in each phase.
    """
    from knute.tools.bench.reliability.harness import rig
    from knute.tools.bench.reliability.results import CaseResult
    from knute.tools.sim.pktfwd import ForwarderClient

    result = CaseResult("udp_flood", runs=1)
    per_phase = max(1, int(flood_s * legit_rate))
    with rig(workdir, meters=40, air=10, seed=seed) as r:
        fleet = r.fleet.fleet
        genuine: list[bytes] = []
        while len(genuine) < 2 * per_phase:
            genuine += [tx.payload for tx in fleet.due(fleet.next_time()) if tx.valid]
        genuine = genuine[:2 * per_phase]
        ids = [f"{int.from_bytes(b[1:5], 'big'):08x}:{int.from_bytes(b[5:8], 'big')}"
               for b in genuine]
        baseline, during = genuine[:per_phase], genuine[per_phase:]
        r.fleet.valid_ids.update(ids)
        r.fleet.sent += len(genuine)
        r.fleet.sent_valid += len(genuine)
        r.gw.start()
        assert r.gw.proc is not None
        pid = r.gw.proc.pid
        fwd = ForwarderClient(LEGIT_EUI, "127.0.0.1", r.fleet.udp_port)
        flood: Flood | None = None
        try:
            _send_legit(fwd, baseline, legit_rate)
            fwd.read_acks()
            acked_before = fwd.acked
            before = _memory_kb(pid)
            cpu_before = _cpu_s(pid)
            log_before = r.gw.log.stat().st_size
            flood = Flood(r.fleet.udp_port, flood_s + 1.0, rate, senders, seed,
                          genuine[:64], workdir)
            time.sleep(0.5)                   # the flood is on before the first frame
            _send_legit(fwd, during, legit_rate)
            figures = flood.wait(timeout=flood_s + 60.0)
            flood = None
            # The gateway may still be reading its receive buffer when the flood ends:
            # count the acks only once it has read everything it holds.
            read_all = _settled(r.gw)
            fwd.read_acks()
            # Each genuine PUSH_DATA carries one frame and is acknowledged when the
            # gateway reads it: the acks during the flood count the genuine frames that
            # reached the gateway (the rest the kernel's receive buffer dropped).
            legit_read_flood = fwd.acked - acked_before
            after = _memory_kb(pid)
            cpu_flood = _cpu_s(pid) - cpu_before
            log_flood = r.gw.log.stat().st_size - log_before
            status = r.gw.status()
            legit_datagrams = fwd.pushed + fwd.pulls
        finally:
            if flood is not None:
                flood.kill()
            fwd.close()
        udp = status["sources"].get("udp", {})
        status_bytes = len(json.dumps(status))
        r.drain(result)
        got = r.backend.ids()
        accepted_base = sum(1 for i in ids[:per_phase] if i in got)
        accepted_flood = sum(1 for i in ids[per_phase:] if i in got)
        seconds = float(figures.get("seconds") or 0.0)
        # On loopback nothing is lost on the way: what the gateway did not read, its
        # receive buffer dropped (the gateway could not keep up, so the kernel chose).
        kernel_dropped = max(0, int(figures.get("sent", 0)) + legit_datagrams
                             - int(udp.get("datagrams", 0)))
        result.notes.update({
            "legit_sent_baseline": per_phase, "legit_accepted_baseline": accepted_base,
            "legit_sent_flood": per_phase, "legit_accepted_flood": accepted_flood,
            "legit_read_flood": legit_read_flood,
            "flood_sent": int(figures.get("sent", 0)),
            "flood_rate_dps": round(figures.get("sent", 0) / seconds) if seconds else 0,
            "gateway_datagrams": udp.get("datagrams", 0), "gateway_shed": udp.get("shed", 0),
            "gateway_trusted": udp.get("trusted", 0),
            "gateway_cpu_s_flood": round(cpu_flood, 2),
            "flood_seconds": seconds, "kernel_dropped": kernel_dropped,
            "rss_kb_before": before.get("VmRSS", 0), "rss_kb_after": after.get("VmRSS", 0),
            "rss_kb_peak": after.get("VmHWM", 0), "log_bytes_flood": log_flood,
            "status_bytes": status_bytes,
            "rejected_udp": udp.get("rejected_by_reason", {}),
        })
        if not read_all:
            result.problems.append("the gateway was still reading datagrams 30 s after the "
                                   "flood")
        if accepted_base == per_phase and accepted_flood < per_phase and not kernel_dropped:
            # Every datagram was read, so the gateway itself dropped genuine frames. (When the
            # kernel dropped some, it chose which: the figures say how many, and how many of
            # the genuine frames got through.)
            result.problems.append(f"{per_phase - accepted_flood} of {per_phase} legitimate "
                                   "frames sent during the flood were not accepted")
        if log_flood > MAX_LOG_BYTES:
            result.problems.append(f"the log grew by {log_flood:,} bytes during the flood")
        if status_bytes > MAX_STATUS_BYTES:
            result.problems.append(f"the status reply is {status_bytes:,} bytes")
    return result


if __name__ == "__main__":
    sys.exit(flood_main())

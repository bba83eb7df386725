"""Firmware nodes run by the MicroPython unix port against ptys and files.

A ``BenchNode`` is one node "board": a flash directory laid out like a real
board (``main.py``, ``config.json``, ``lib/protocol``, ``lib/firmware`` as
.mpy files from ``tools.rig.flash.compile_lib``, ``state/``), a pty standing in for each
UART, and the micropython process. Console lines and link records are
collected by reader threads; records are split by ``protocol.stream.StreamDecoder``
and frames decoded by ``protocol.frame.decode`` on CPython, independently of
the firmware.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from knute.protocol import frame, stream
from knute.tools.board_heap import bench_heap
from knute.tools.rig.ptys import open_pty
from knute.tools.rig.wait import poll_pause

ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = bytes.fromhex(KEY_HEX)
HOUR_T0 = 1700006400          # a unix time on a 6-hour boundary (hour 472224)
WAIT_S = 30.0                 # upper bound for any wait on a node process


class PtyReader:
    """Collects link records from a pty master in a thread."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.decoder = stream.StreamDecoder()
        self.records: list[tuple[int, bytes]] = []
        self.errors: list[Exception] = []
        self.raw = bytearray()
        self.idle_passes = 0            # passes of the thread that found nothing waiting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                self.idle_passes += 1
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                # No slave open right now (between node restarts), and nothing left
                # to read: the master gives EIO only once what was written is read.
                self.idle_passes += 1
                time.sleep(0.02)
                continue
            self.raw.extend(data)
            for item in self.decoder.feed(data):
                if isinstance(item, Exception):
                    self.errors.append(item)
                else:
                    self.records.append(item)

    def drain(self, quiet_s: float = 0.3) -> None:
        """Wait until no bytes arrived for ``quiet_s``."""
        deadline = time.monotonic() + WAIT_S
        last = -1
        while time.monotonic() < deadline:
            now = len(self.raw)
            if now == last:
                return
            last = now
            time.sleep(quiet_s)

    def caught_up(self) -> None:
        """Wait until every byte written to the pty before the call has been read.

        That is once a pass of the thread that began after the call found nothing
        waiting: exact when no one writes any more (the node has exited), where
        ``drain`` has to wait out its quiet time.
        """
        if self._stop.is_set():
            return
        target = self.idle_passes + 2       # the pass running now may predate the call
        deadline = time.monotonic() + WAIT_S
        while self.idle_passes < target and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        """End the thread and close the master (once: a second call does nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)


class BenchNode:
    """One node on the bench (see the module docstring)."""

    def __init__(self, workdir: Path, micropython: Path, lib: Path, config: dict[str, Any],
                 heap: str | None = None, uarts: tuple[str, ...] = ("link",),
                 bits: int = 64) -> None:
        self.dir = workdir
        self.micropython = micropython
        # The one rule for a bench node's heap (knute.tools.board_heap.bench_heap):
        # KNUTE_FW_HEAP, else with downlinks on 64 KiB on the 32-bit build and the
        # smallest supported board's heap on the 64-bit port, else the project's
        # margin; a test may ask for a heap of its own.
        self.heap = heap or bench_heap(config, bits)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "lib").exists():
            shutil.copytree(lib, self.dir / "lib")
        shutil.copy(ROOT / "firmware" / "main.py", self.dir / "main.py")
        self.ptys: dict[str, PtyReader] = {}
        self.config = config
        bench = config.setdefault("bench", {})
        wires = bench.setdefault("uart", {})
        if config.get("link", {}).get("type", "uart") == "uart":
            for name in uarts:
                master, path = open_pty()
                wires[name] = path
                self.ptys[name] = PtyReader(master)
        self.write_config(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._out_thread: threading.Thread | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        """(Re)write config.json in the flash directory."""
        (self.dir / "config.json").write_text(json.dumps(config))

    def start(self) -> None:
        """Start the node process (``micropython -X heapsize=... main.py``)."""
        self.proc = subprocess.Popen(
            [str(self.micropython), "-X", "heapsize=" + self.heap, "main.py"],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._out_thread = threading.Thread(target=self._read_console, args=(self.proc,),
                                            name="node-console", daemon=True)
        self._out_thread.start()

    def _read_console(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_line(self, pattern: str, count: int = 1, timeout: float = WAIT_S) -> str:
        """Block until the console printed ``count`` lines matching ``pattern``."""
        regex = re.compile(pattern)
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            hits = [line for line in list(self.lines) if regex.search(line)]
            if len(hits) >= count:
                return hits[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.1)
                hits = [line for line in list(self.lines) if regex.search(line)]
                if len(hits) >= count:
                    return hits[count - 1]
                raise AssertionError(
                    f"node exited before printing {pattern!r}:\n{self.console()}")
            # every line is searched again each time: fewer polls as the wait goes on
            time.sleep(poll_pause(time.monotonic() - started, 0.0))
        raise AssertionError(f"no {pattern!r} on the console:\n{self.console()}")

    def wait(self, timeout: float = WAIT_S) -> int:
        """Wait for the node to exit; its status."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self._out_thread is not None:
            self._out_thread.join(timeout=5)
        return code

    def kill9(self) -> None:
        """SIGKILL: a power cut, as far as the node can tell."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def console(self) -> str:
        """Everything the node printed."""
        return "\n".join(self.lines)

    def records(self, name: str = "link") -> list[tuple[int, bytes]]:
        """Link records read from UART ``name`` so far (after draining the pty).

        A running node's pty is drained until it has been quiet a while; once the
        node has exited, only until what it wrote has been read (no quiet time).
        """
        reader = self.ptys[name]
        if self.proc is not None and self.proc.poll() is None:
            reader.drain()
        else:
            reader.caught_up()
        return list(reader.records)

    def frames(self, name: str = "link", key: bytes = KEY) -> list[dict[str, Any]]:
        """The FRAME records' frames, decoded and verified on CPython."""
        return [frame.decode(body, key) for rtype, body in self.records(name)
                if rtype == stream.REC_FRAME]

    def link_frame(self, index: int, timeout: float = WAIT_S) -> dict[str, Any]:
        """Frame ``index`` (0 the first) of the node's FRAME records on its ``link`` UART,
        waiting for it up to ``timeout`` or until the node exits; AssertionError if it
        never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = [frame.decode(body, KEY) for rtype, body in list(self.ptys["link"].records)
                      if rtype == stream.REC_FRAME]
            if len(frames) > index:
                return frames[index]
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"no frame {index} from the node:\n{self.console()}")

    def state(self, name: str) -> Any:
        """A state file's value (None when absent)."""
        path = self.dir / "state" / (name + ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def close(self) -> None:
        """Kill the process if still running and stop the pty readers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for reader in self.ptys.values():
            reader.stop()


def water_config(**water: Any) -> dict[str, Any]:
    """A water_meter config for the bench, pulses from pulses.txt in the flash dir."""
    section = {"sends_per_day": 4, "profile_len": 6}
    section.update(water)
    return {
        "role": "water_meter", "device_id": 4660, "key": KEY_HEX,
        "link": {"type": "uart", "uart": "link"}, "board": "unix", "jitter_s": 5,
        "water": section,
        "bench": {"pulse": {"pulse": "pulses.txt"}, "time_scale": 36000,
                  "start_time": HOUR_T0, "seed": 7},
    }


def pulse_lines(start: int, hourly: list[int], per_hour_lines: int = 60) -> str:
    """Pulse-file text spreading each hour's count over ``per_hour_lines`` events."""
    out = []
    for hour, count in enumerate(hourly):
        base, extra = divmod(count, per_hour_lines)
        step = 3600 // per_hour_lines
        for i in range(per_hour_lines):
            n = base + (1 if i < extra else 0)
            if n:
                out.append(f"@{start + hour * 3600 + i * step + 1} {n}")
    return "\n".join(out) + "\n"


# The bench air of a LoRa node (firmware/hal/unix_bench_rx.py): the node appends its
# uplinks to radio.path, and reads the answers from radio.rx_path.
LORA_FREQ = 868100000
LORA_SF = 7
AIR_WAIT_S = 60.0
# A TX line whose start lies after every window: each later window ends at once
# (the node keeps it for a window that never comes) instead of waiting.
NO_MORE = "TX 99999999999999 0 0 00\n"


class Air:
    """The bench air between a test or bench and one LoRa node: its uplinks, our downlinks."""

    def __init__(self, node: Any) -> None:
        self.node = node
        node_dir = node.dir
        self.up = node_dir / "air.txt"
        self.down = node_dir / "dl.txt"
        self.down.write_text("")
        self.seen = 0
        self.freq = LORA_FREQ   # the channel and SF of the last uplink (the node hops)
        self.sf = LORA_SF

    def uplink(self, proc: Any, timeout: float = AIR_WAIT_S) -> tuple[dict[str, Any], int]:
        """The next uplink: (decoded frame, end_ms), waiting for the node to send it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.up.read_text() if self.up.exists() else ""
            complete = text.split("\n")[:-1]           # lines the node has finished
            if len(complete) > self.seen:
                parts = complete[self.seen].split()
                self.seen += 1
                # RX <rssi> <snr> <hex> <end_ms> <freq_hz> <sf>
                self.freq, self.sf = int(parts[5]), int(parts[6])
                return frame.decode(bytes.fromhex(parts[3]), KEY), int(parts[4])
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError("no uplink from the node:\n" + self.node.console())

    def answer(self, start_ms: int, payload: bytes, freq: int | None = None,
               sf: int | None = None) -> None:
        """Transmit `payload` to the node starting at its bench time `start_ms`.

        By default on the last uplink's channel and SF, where its RX1 listens.
        """
        freq = self.freq if freq is None else freq
        sf = self.sf if sf is None else sf
        with self.down.open("a") as handle:
            handle.write(f"TX {start_ms} {freq} {sf} {payload.hex()}\n")

    def silence(self) -> None:
        """No more answers: later windows end at once."""
        with self.down.open("a") as handle:
            handle.write(NO_MORE)

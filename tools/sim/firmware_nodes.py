"""Water meters on the real firmware for ``knute demo --real-firmware K``.

Each node is a virtual board (the MicroPython unix port behind a pty, see
tools/sim/vdevice.py) provisioned with ``knute provision`` exactly as a technician
would, whose UART is one end of a null modem (tools/rig/nullmodem.py) and whose
pulse input is a file of a simulated household's water use. The gateway reads
the other end of the null modem as a serial source. The board's console is
read all along; every ``sent fcnt=N`` line it prints is a frame the backend
must receive.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from knute.gateway.errors import KnuteError
from knute.tools.rig.nullmodem import NullModem
from knute.tools.sim.fleet import HOUR, Household
from knute.tools.sim.vdevice import VirtualBoard

PULSE_DAYS = 90               # simulated days of pulses written ahead
_SENT = re.compile(r"knute: sent fcnt=(\d+)")


class FirmwareNode:
    """One provisioned virtual board running the water-meter firmware."""

    def __init__(self, workdir: Path, registry: str, start: float, speed: float,
                 seed: int) -> None:
        self.line = NullModem()
        self.board = VirtualBoard(flash_dir=workdir, binds=("/dev/pts",), keep_flash=True)
        self.uart_path = self.line.b_path
        self.sent: set[int] = set()
        self.console: list[str] = []
        self.device_id = 0
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        try:
            self.board.start()
            self._write_pulses(start, random.Random(seed))
            self._provision(workdir, registry, start, speed, seed)
        except BaseException:
            self.close()
            raise

    def _write_pulses(self, start: float, rng: random.Random) -> None:
        household = Household(persons=rng.choice([2, 3, 4]),
                              litres_per_person_day=rng.uniform(120, 180),
                              away_on_holidays=False)
        hour = start - start % HOUR
        lines = []
        for _ in range(PULSE_DAYS * 24):
            litres = household.litres(hour, rng)
            if litres:
                lines.append(f"@{int(hour + rng.uniform(60, 3500))} {litres}")
            hour += HOUR
        (self.board.flash_dir / "pulses.txt").write_text("\n".join(lines) + "\n")

    def _provision(self, workdir: Path, registry: str, start: float, speed: float,
                   seed: int) -> None:
        wiring = workdir.parent / f"{workdir.name}-wiring.json"
        wiring.write_text(json.dumps({
            "jitter_s": 30, "downlink": True,
            "water": {"sends_per_day": 4, "profile_len": 6, "litres_per_pulse": 1},
            "bench": {"uart": {"link": self.line.a_path}, "pulse": {"pulse": "pulses.txt"},
                      "time_scale": speed, "start_time": int(start), "seed": seed,
                      # a receive window may wait this long in real time (clock held)
                      # for the gateway's downlink, whatever the time scale
                      "rx_wait_real_ms": 2000},
        }))
        knute = str(Path(sys.executable).parent / "knute")
        result = subprocess.run(
            [knute, "provision", "--port", self.board.port, "--kind", "water_meter",
             "--registry", registry, "--name", f"firmware-{seed}", "--site", "demo bench",
             "--config", str(wiring), "--no-start", "--json"],
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise KnuteError(f"provisioning a virtual board failed: {result.stderr.strip()}")
        self.device_id = int(json.loads(result.stdout)["device_id"])

    def run(self) -> None:
        """Boot the node's firmware (a soft reset), reading its console from then on.

        Called once the gateway listens: a serial port drops what arrived before it
        was opened, as a real one does.
        """
        self._reader = threading.Thread(target=self._read_console, name="firmware-console",
                                        daemon=True)
        self._reader.start()

    def _read_console(self) -> None:
        fd = os.open(self.board.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        os.write(fd, b"\r\x04")           # Ctrl-D in the friendly REPL: soft reset, main.py
        pending = ""
        try:
            while not self._stop.is_set():
                if not select.select([fd], [], [], 0.2)[0]:
                    continue
                try:
                    pending += os.read(fd, 4096).decode(errors="replace")
                except OSError:
                    time.sleep(0.1)
                    continue
                *lines, pending = pending.replace("\r", "").split("\n")
                for text in lines:
                    self.console.append(text)
                    match = _SENT.search(text)
                    if match:
                        self.sent.add(int(match.group(1)))
        finally:
            os.close(fd)

    def expected_ids(self) -> set[str]:
        """Idempotency keys of every frame the firmware says it sent."""
        return {f"{self.device_id:08x}:{fcnt}" for fcnt in self.sent}

    def stop_board(self) -> None:
        """Stop counting sends and power the board off; the line stays up, so frames
        already on it still reach the gateway."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
        with contextlib.suppress(Exception):
            self.board.close()

    def close(self) -> None:
        """Stop the board, its console reader and the null modem."""
        self.stop_board()
        self.line.close()


def start_boards(count: int, workdir: Path, registry: str, start: float,
                 speed: float) -> list[FirmwareNode]:
    """`count` provisioned firmware nodes with their flash under `workdir`, not yet
    running: call ``run()`` on each once the gateway reads their lines."""
    nodes: list[FirmwareNode] = []
    try:
        for n in range(count):
            flash = workdir / f"board-{n}"
            flash.mkdir(parents=True, exist_ok=True)
            nodes.append(FirmwareNode(flash, registry, start, speed, seed=n + 1))
    except BaseException:
        for node in nodes:
            node.close()
        raise
    return nodes

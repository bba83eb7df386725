"""An MQTT broker process on loopback, for the demo, benchmarks and tests.

``Broker("mosquitto")`` runs /usr/sbin/mosquitto with its own config file (one
listener on 127.0.0.1, anonymous clients, no persistence); ``Broker("amqtt")``
runs the pure-Python amqtt broker in a subprocess, for machines where
Mosquitto cannot be installed. ``stop()``/``start()`` keep the port, so
clients see an outage and a return.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from knute.tools.rig.proc import terminate

MOSQUITTO = Path("/usr/sbin/mosquitto")
BROKER_KINDS = ("mosquitto", "amqtt")
BROKER_START_TIMEOUT_S = 15.0
BROKER_STOP_TIMEOUT_S = 5.0


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _bindable(host: str, port: int) -> bool:
    """True if both a TCP and a UDP socket can bind ``host:port`` now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` free for both TCP and UDP right now.

    Chosen at random below the kernel's ephemeral range, so that no outgoing
    connection (a client reconnecting to a stopped broker, say) can take it
    between a server's stop and restart. Random choice keeps parallel runs
    apart; falls back to a kernel-chosen port when nothing is free.
    """
    ephemeral = _ephemeral_ports()
    low, high = 20000, ephemeral.start
    if high - low < 1000:
        low, high = ephemeral.stop, 65536
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port not in ephemeral and _bindable(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def default_kind() -> str:
    """Mosquitto where it is installed, else amqtt."""
    return "mosquitto" if os.access(MOSQUITTO, os.X_OK) else "amqtt"


class BrokerError(RuntimeError):
    """A test broker did not start."""


def _mqtt_connack(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if an MQTT 3.1.1 CONNECT to ``host:port`` is accepted (CONNACK, code 0)."""
    client_id = b"knute-probe-%d" % os.getpid()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(bytes((0x10, len(body))) + body)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return reply == b"\x20\x02\x00\x00"
    except OSError:
        return False


class Broker:
    """An MQTT broker process listening on 127.0.0.1 for the tests.

    ``kind`` is "mosquitto" (``/usr/sbin/mosquitto``, its own config file:
    one listener on 127.0.0.1, anonymous clients allowed, no persistence) or
    "amqtt" (the pure-Python broker, in a subprocess, for machines without
    Mosquitto). Files (config, log) live in ``workdir``. The port stays the
    same across ``stop()``/``start()``, so clients see an outage and a return.
    ``persistent=True`` (Mosquitto only) keeps sessions and queued QoS 1
    messages across a stop and start, as a production broker does;
    ``extra_config`` is appended to Mosquitto's config file (TLS listeners,
    password files, queue limits).
    """

    def __init__(self, workdir: Path | None = None, kind: str | None = None,
                 port: int | None = None, *, persistent: bool = False,
                 extra_config: str = "") -> None:
        kind = kind or default_kind()
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"knute-{kind}-"))
        if kind not in BROKER_KINDS:
            raise ValueError(f"unknown broker kind {kind!r}")
        self.kind = kind
        self.persistent = persistent
        self.extra_config = extra_config
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.workdir = workdir
        self.log_path = workdir / f"{kind}.log"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Broker {self.kind} {self.host}:{self.port} {state}>"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    def _command(self) -> list[str]:
        """Write this broker's config file and return the command that starts it."""
        if self.kind == "mosquitto":
            config = self.workdir / "mosquitto.conf"
            config.write_text(
                f"listener {self.port} {self.host}\n"
                "allow_anonymous true\n"
                + (f"persistence true\npersistence_location {self.workdir}/\n"
                   if self.persistent else "persistence false\n")
                # As root, Mosquitto would switch to its own user, which cannot
                # write the persistence file into our directory.
                + ("user root\n" if os.geteuid() == 0 else "") +
                "log_dest stderr\n"
                "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                + self.extra_config
            )
            return [str(MOSQUITTO), "-c", str(config)]
        config = self.workdir / "amqtt.yaml"
        config.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]

    def log_text(self) -> str:
        """Everything the broker has logged so far (all starts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout_s: float = BROKER_START_TIMEOUT_S) -> None:
        """Start the broker (no-op if running); return once it accepts MQTT clients."""
        if self.running:
            return
        command = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _mqtt_connack(self.host, self.port):
                return
            time.sleep(0.05)
        exited = self._proc.poll()
        self.stop(kill=True)
        why = (f"exited with status {exited}" if exited is not None
               else f"not ready in {timeout_s:g} s")
        tail = "\n".join(self.log_text().splitlines()[-20:])
        raise BrokerError(f"{self.kind} on {self.host}:{self.port} {why}; log:\n{tail}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (SIGKILL with ``kill=True``); no-op if stopped."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            terminate(proc, BROKER_STOP_TIMEOUT_S, sig=signal.SIGKILL if kill else signal.SIGTERM,
                      kill_timeout=BROKER_STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

"""The gateway as a real process: ``knute gateway run`` started, watched and stopped.

``GatewayProcess`` is the one launcher that tests, the demo and the benchmarks
use: it owns a short directory for the status socket (unix socket paths are
limited to 108 bytes), the config file and the log, starts the daemon, waits
until its status socket answers (and, if asked, until every source is open),
and stops it with SIGTERM or kill -9. The caller writes the config text; it
names ``status_socket`` under ``[status]`` (``status_and_broker`` writes that
section and the broker's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.proc import terminate
from knute.tools.rig.wait import WaitTimeout, wait_for

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


def knute_command() -> str:
    """The ``knute`` console script of this installation."""
    return str(Path(sys.executable).parent / "knute")


def status_and_broker(status_socket: str, host: str, port: int, prefix: str) -> str:
    """The ``[status]`` and ``[mqtt]`` sections of a test gateway's config (TOML): its
    status socket, and a broker without TLS or login at ``host``:``port`` with its
    topics under ``prefix``. Every test config carries them; what differs between
    tests is the rest, which stays written out where the test is."""
    return f"""[status]
socket = "{status_socket}"
[mqtt]
host = "{host}"
port = {port}
prefix = "{prefix}"
"""


class GatewayProcess:
    """One gateway installation in ``root``, run as ``knute gateway run``.

    ``starts``, ``kills`` and ``crashes`` count what happened to the process;
    a crash is an exit nobody asked for (seen by ``check`` or ``stop``).
    """

    def __init__(self, root: Path, *, new_session: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.knute = knute_command()
        self.sock_dir = tempfile.mkdtemp(prefix="kgw", dir="/tmp")
        self.status_socket = os.path.join(self.sock_dir, "gw.sock")
        self.config = root / "gateway.toml"
        self.log = root / "gateway.log"
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.crashes = 0

    def write_config(self, text: str) -> None:
        """Write the config file (it should name ``self.status_socket``)."""
        self.config.write_text(text)

    def write_test_config(self, gateway_id: str, mqtt_port: int, rest: str) -> None:
        """Write a test gateway's config: its id, a short dedup window and drain, its
        status socket, the broker on 127.0.0.1 with prefix ``t``, then ``rest`` (the
        sources and any further sections, TOML)."""
        self.write_config(f"""[gateway]
id = "{gateway_id}"
dedup_window_ms = 50
drain_timeout_s = 3
""" + status_and_broker(self.status_socket, "127.0.0.1", mqtt_port, "t") + rest)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``knute ARGS --config CONFIG``; KnuteError with its stderr if it fails."""
        out = subprocess.run([self.knute, *args, "--config", str(self.config)],
                             capture_output=True, text=True, timeout=60, check=False)
        if check and out.returncode != 0:
            raise KnuteError(f"knute {' '.join(args)} exited {out.returncode}: "
                             f"{out.stderr.strip()}")
        return out

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait_sources: bool = True, log_json: bool = False,
              timeout: float = START_TIMEOUT_S) -> None:
        """Start the daemon; return once its status socket answers (and sources are open).

        pyserial flushes a port's input when it opens it: write to a serial
        source only once it is open (``wait_sources``).
        """
        cmd = [self.knute, "gateway", "run", "--config", str(self.config)]
        if log_json:
            cmd.append("--log-json")
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(self.root),
                                         start_new_session=self.new_session)
        self.starts += 1

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise KnuteError(f"gateway exited with {self.proc.returncode} at start-up; "
                                 f"log {self.log}:\n{self.log_tail()}")
            st = self.try_status()
            if not st:
                return False
            return not wait_sources or all(
                s.get("state") == "open" for s in st.get("sources", {}).values())

        try:
            wait_for(ready, timeout, "the gateway to start")
        except WaitTimeout as exc:
            sources = {name: src.get("state")
                       for name, src in self.try_status().get("sources", {}).items()}
            raise WaitTimeout(f"{exc}; sources {sources}; log {self.log}:\n"
                              f"{self.log_tail()}") from None

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """The live status over the unix socket (OSError/ValueError if it does not answer)."""
        from knute.gateway.status import request

        return request(self.status_socket, {"cmd": "status"}, timeout=timeout)

    def try_status(self, timeout: float = 1.0) -> dict[str, Any]:
        """The live status, or {} when the daemon does not answer."""
        try:
            return self.status(timeout)
        except (OSError, ValueError):
            return {}

    def check(self) -> bool:
        """False (and one crash counted) if the process died without being told to."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes += 1
            self.proc = None
            return False
        return True

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGHUP: reload) to the running daemon."""
        if self.proc is None:
            raise KnuteError("the gateway is not running")
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9 (a power cut, as far as the daemon can tell)."""
        if self.proc is not None:
            self.check()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=15)
            self.proc = None
            self.kills += 1

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; the exit status (-9 if it had to be killed, -1 if not running)."""
        if self.proc is None:
            return -1
        if self.proc.poll() is not None:
            self.crashes += 1
            code = self.proc.returncode
            self.proc = None
            return int(code)
        code = terminate(self.proc, timeout)
        self.proc = None
        return code

    def log_text(self) -> str:
        """Everything the gateway logged (every start)."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` log lines."""
        return "\n".join(self.log_text().splitlines()[-n:])

    def close(self) -> None:
        """Kill a daemon still running and remove the socket directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None
        shutil.rmtree(self.sock_dir, ignore_errors=True)

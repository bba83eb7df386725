"""The city's backend as a real process: ``knute backend run`` started, read and stopped.

``BackendProcess`` writes nothing itself: the caller writes the TOML text
(docs/water.md). ``start`` returns once the backend has subscribed and its web
page is up, with the page's URL read from the log line ``web page at <url>``
(so ``[web] port = 0`` works); ``summary`` reads ``/api/summary``.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.gateway import knute_command
from knute.tools.rig.proc import terminate
from knute.tools.rig.wait import wait_for

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_URL = re.compile(r"web page at (http://\S+)")


class BackendProcess:
    """One ``knute backend run`` with its config and log in ``root``."""

    def __init__(self, root: Path, *, new_session: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.config = root / "backend.toml"
        self.log = root / "backend.log"
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def write_config(self, text: str) -> None:
        """Write the backend's TOML file."""
        self.config.write_text(text)

    def log_text(self) -> str:
        """Everything the backend logged."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start it; return the web page's URL once it is subscribed and serving."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [knute_command(), "backend", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.root), start_new_session=self.new_session)

        def ready() -> str:
            assert self.proc is not None
            text = self.log_text()
            if self.proc.poll() is not None:
                last = text.strip().splitlines()[-1:] or ["no output"]
                raise KnuteError(f"backend exited with {self.proc.returncode} at start-up: "
                                 f"{last[0]}")
            found = _URL.search(text)
            return found.group(1) if found and "subscribed to" in text else ""

        self.url = wait_for(ready, timeout, "the backend to subscribe and serve its page")
        return self.url

    def summary(self, timeout: float = 5.0) -> dict[str, Any]:
        """``/api/summary``: readings, meters, open alerts, counters."""
        with urllib.request.urlopen(self.url + "api/summary", timeout=timeout) as response:
            return dict(json.loads(response.read()))

    def try_summary(self, timeout: float = 0.5) -> dict[str, Any]:
        """``summary``, or {} when the page does not answer."""
        if not self.url:
            return {}
        try:
            return self.summary(timeout)
        except (OSError, urllib.error.URLError, ValueError):
            return {}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; the exit status (-9 if it had to be killed, -1 if not running)."""
        if self.proc is None:
            return -1
        code = terminate(self.proc, timeout)
        self.proc = None
        return code

"""Headless Chromium for the web page's tests: the page as a real browser parses and draws it.

Each call starts one Chromium process (Debian's ``chromium``; ``make test``
installs it where it can) with a fresh profile in its own folder and the
flags that keep it from reaching the network on its own (no component
updates, sync, QUIC or first-run fetches). ``dump_dom`` returns the document
after the load event, as the browser built it; ``screenshot`` writes a PNG.
Nothing here needs Node or a driver: Chromium's own command-line modes.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

from knute.gateway.errors import KnuteError

NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
TIMEOUT_S = 120.0      # an upper bound for one page on a loaded machine


class BrowserError(KnuteError):
    """Chromium is missing, failed or timed out; the message says which and how."""


def find_chromium() -> str | None:
    """The path of a Chromium binary on ``$PATH``, or None."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG file's header; ``BrowserError`` if it is not a PNG."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise BrowserError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


class Chromium:
    """Runs headless Chromium once per call; profiles and logs go under ``workdir``."""

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        found = binary or find_chromium()
        if found is None:
            raise BrowserError("no Chromium on PATH (" + ", ".join(NAMES) + "): install "
                               "Debian's chromium (make test does so as root)")
        self.binary = found
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def _run(self, args: list[str], timeout: float) -> str:
        profile = Path(tempfile.mkdtemp(prefix="profile-", dir=self.workdir))
        env = {**os.environ, "HOME": str(profile)}
        command = [self.binary, *FLAGS, f"--user-data-dir={profile}", *args]
        # Its own session: a timeout ends Chromium's helper processes with it.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BrowserError(f"chromium {args[-1]}: no answer in {timeout:g} s") from None
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if proc.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BrowserError(f"chromium {args[-1]}: exit status {proc.returncode}: {last[0]}")
        return out.decode(errors="replace")

    def dump_dom(self, url: str, timeout: float = TIMEOUT_S) -> str:
        """The document at ``url`` as the browser built it (after the load event)."""
        return self._run(["--dump-dom", url], timeout)

    def screenshot(self, url: str, path: Path, width: int = 1280, height: int = 2000,
                   timeout: float = TIMEOUT_S) -> Path:
        """Draw the page at ``url`` into the PNG file ``path`` (``width`` x ``height``)."""
        self._run([f"--screenshot={path}", f"--window-size={width},{height}", url], timeout)
        if not path.exists():
            raise BrowserError(f"chromium {url}: wrote no screenshot to {path}")
        return path

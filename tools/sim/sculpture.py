"""The light sculpture for ``knute demo``: the real display firmware following the backend.

``Sculpture`` runs the ``display`` role on the MicroPython unix port (a flash
directory like a board's, its strip simulated as a file, firmware/hal/unix_strip.py)
subscribed to ``<prefix>/air/index/area/<area>`` on the demo's broker, where
``knute backend run`` publishes the area's index, retained, each time an hour
of the area's stations closes (docs/air.md). The demo also watches that topic
(``Sculpture.doc``): the backend's last word is what the strip must end on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from knute.tools.rig.flash import compile_lib
from knute.tools.rig.upy import micropython

ROOT = Path(__file__).resolve().parents[2]
AREA = "sentrum"
BANDS = ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor")   # EAQI levels 1-6
QUIET_S = 1.0       # settle: no new index for this long means the backend is done


class Sculpture:
    """The display node, and a watch on the area index it follows (see the module docstring)."""

    def __init__(self, workdir: Path, host: str, port: int, prefix: str) -> None:
        self.dir = workdir
        self.host = host
        self.port = port
        self.topic = f"{prefix}/air/index/area/{AREA}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: list[str] = []
        self.strip = workdir / "strip.txt"
        self.doc: dict[str, Any] | None = None      # the area index last published
        self.docs = 0                               # index messages seen
        self._seen_at = 0.0                         # monotonic time of the last one
        self._lock = threading.Lock()
        self._watch: Any = None

    @property
    def level(self) -> int | None:
        """The EAQI level (1-6) of the backend's last area index; None before one or withheld."""
        with self._lock:
            doc = self.doc
        level = (doc or {}).get("scales", {}).get("eaqi", {}).get("level")
        return level if isinstance(level, int) else None

    @property
    def band(self) -> str | None:
        """The EAQI band of the backend's last area index (``good`` ... ``extremely_poor``)."""
        level = self.level
        return BANDS[level - 1] if level else None

    def start(self) -> None:
        """Boot the display node and start watching the area index topic."""
        from knute.tools.rig.subscriber import Subscriber

        self.dir.mkdir(parents=True, exist_ok=True)
        compile_lib(self.dir / "lib")
        shutil.copy(ROOT / "firmware" / "main.py", self.dir / "main.py")
        config = {"role": "display", "device_id": 0xD15,
                  "display": {"area": AREA, "pixels": 30, "transition_s": 3, "frame_ms": 40,
                              "night": None, "topic": self.topic,
                              "mqtt": {"host": self.host, "port": self.port,
                                       "keepalive_s": 30}},
                  "bench": {"strip": {"strip": "strip.txt"}}}
        (self.dir / "config.json").write_text(json.dumps(config))
        self.proc = subprocess.Popen([str(micropython(64)), "-X", "heapsize=64k", "main.py"],
                                     cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        threading.Thread(target=self._read_console, name="sculpture-console",
                         daemon=True).start()
        # Follows the broker's restart by itself; the retained index comes again each time.
        self._watch = Subscriber(self.host, self.port, self.topic, keepalive=10,
                                 on_message=self._on_index)

    def _on_index(self, message: Any) -> None:
        try:
            doc = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(doc, dict):
            with self._lock:
                self.doc = doc
                self.docs += 1
                self._seen_at = time.monotonic()

    def _read_console(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.console.append(raw.decode(errors="replace").rstrip())

    def colour(self) -> str | None:
        """The strip's colour now, ``#rrggbb`` (its first pixel), or None before it lit."""
        try:
            text = self.strip.read_text()
        except OSError:
            return None
        whole = text[:text.rfind("\n") + 1].splitlines()
        if not whole:
            return None
        return whole[-1].split()[2].split("*")[0]

    def settle(self, timeout_s: float) -> None:
        """Wait until the backend is quiet and the strip shows its last index (or timeout).

        Call it once the backend has stored every reading: the last hours it
        closes may still be on their way. A withheld index shows the stale
        pattern, which is never a palette colour.
        """
        from knute.firmware.config_display import DISPLAY_PALETTES

        palette = DISPLAY_PALETTES["eaqi"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                quiet = time.monotonic() - self._seen_at >= QUIET_S
            level, colour = self.level, self.colour()
            shown = (colour == palette[level - 1] if level
                     else colour is not None and colour not in palette)
            if quiet and shown:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop watching and stop the display node."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

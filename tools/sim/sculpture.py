"""The light sculpture for ``knute demo``: the real display firmware and the area index it shows.

``Sculpture`` runs the ``display`` role on the MicroPython unix port (a flash
directory like a board's, its strip simulated as a file, firmware/hal/unix_strip.py)
subscribed to ``<prefix>/air/index/area/<area>`` on the demo's broker, and
publishes that area's index there, retained, as the backend will.

Until the backend's index (docs/air.md) is what the demo runs, the demo computes
the area's level itself with one documented rule, ``area_level``: the median of
the air stations' latest PM2.5 values, banded with the hourly PM2.5 bands of the
EEA's European Air Quality Index (``EAQI_PM2_5_BANDS``). No averaging, no quality
control: the backend's index (docs/air.md) replaces this.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from knute.tools.rig.flash import compile_lib
from knute.tools.rig.upy import micropython

ROOT = Path(__file__).resolve().parents[2]
AREA = "sentrum"
# Upper bounds (ug/m3, each belonging to its band) of EAQI levels 1-5 for hourly PM2.5;
# above the last: level 6. The EEA's bands as revised in 2024 (ETC HE Report 2024/17,
# "EEA's revision of the European Air Quality Index bands"), the ones the backend's
# index uses (docs/air.md): good 0-5, fair 5-15, moderate 15-50, poor 50-90,
# very poor 90-140, extremely poor above.
EAQI_PM2_5_BANDS = (5.0, 15.0, 50.0, 90.0, 140.0)
BANDS = ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor")
PUBLISH_EVERY_S = 2.0
VALID_FOR_S = 120


def pm2_5_level(value: float) -> int:
    """The EAQI level (1-6) of a PM2.5 concentration in ug/m3."""
    for level, upper in enumerate(EAQI_PM2_5_BANDS, start=1):
        if value <= upper:
            return level
    return 6


def area_level(latest_pm2_5: list[float]) -> int | None:
    """The area's level: the median station's PM2.5 band; None without data."""
    if not latest_pm2_5:
        return None
    return pm2_5_level(statistics.median(latest_pm2_5))


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def index_message(level: int | None, now: float, stations: list[str]) -> dict[str, Any]:
    """The area index message (docs/schema/air_index.schema.json) for ``level``."""
    band = BANDS[level - 1] if level else None
    status = "ok" if level else "withheld"
    return {"scope": "area", "subject": AREA, "scale": "eaqi", "level": level, "band": band,
            "colour": None, "status": status, "reasons": [] if level else ["no_data"],
            "hour": _utc(now - now % 3600), "updated_at": _utc(now),
            "valid_until": _utc(now + VALID_FOR_S),
            "scales": {"eaqi": {"level": level, "band": band, "colour": None,
                                "pollutants": {}}},
            "stations": stations}


class Sculpture:
    """The display node and the demo's index publisher (see the module docstring)."""

    def __init__(self, workdir: Path, host: str, port: int, prefix: str) -> None:
        self.dir = workdir
        self.host = host
        self.port = port
        self.topic = f"{prefix}/air/index/area/{AREA}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.level: int | None = None
        self.console: list[str] = []
        self.strip = workdir / "strip.txt"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, latest_pm2_5: Any) -> None:
        """Boot the display node; publish the index from ``latest_pm2_5()`` every few s."""
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
        self._thread = threading.Thread(target=self._publish_loop, args=(latest_pm2_5,),
                                        name="sculpture-index", daemon=True)
        self._thread.start()

    def _read_console(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.console.append(raw.decode(errors="replace").rstrip())

    def _publish_loop(self, latest_pm2_5: Any) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        # One client for the run; paho reconnects by itself after the demo's broker outage.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="knute-demo-air-index")
        client.reconnect_delay_set(1, 2)
        client.connect_async(self.host, self.port, keepalive=10)
        client.loop_start()
        try:
            while not self._stop.is_set():
                stations = latest_pm2_5()
                level = area_level(list(stations.values()))
                doc = index_message(level, time.time(), sorted(stations))
                if client.is_connected():
                    info = client.publish(self.topic, json.dumps(doc), qos=1, retain=True)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        self.level = level
                self._stop.wait(PUBLISH_EVERY_S)
        finally:
            client.disconnect()
            client.loop_stop()

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
        """Stop publishing, then wait until the strip shows the last level's colour (or timeout).

        Publishing stops first: a reading still in flight at the end of a run
        would otherwise move the level while the strip is being read.
        """
        from knute.firmware.config_display import DISPLAY_PALETTES

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.level is not None and self.colour() == DISPLAY_PALETTES["eaqi"][
                    self.level - 1]:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop publishing and the display node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

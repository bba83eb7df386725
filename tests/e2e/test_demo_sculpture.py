"""The light sculpture in ``knute demo``: the display firmware follows the area index."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from knute.backend import config as backend_config
from knute.backend.air_index import EAQI, HOUR_S
from knute.backend.air_service import AirIndexes
from knute.backend.store_sqlite import Store
from knute.firmware.config_display import DISPLAY_PALETTES
from knute.tools.sim.sculpture import AREA, BANDS


def test_sculpture_bands_are_the_backends_eaqi_bands() -> None:
    # air_index in the demo's summary is a band name of the backend's primary scale.
    assert EAQI.names == BANDS


def test_demo_json_reports_the_sculpture(knute_bin: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [str(knute_bin), "demo", "--for", "12", "--json", "--meters", "4", "--air", "6",
         "--real-firmware", "0", "--workdir", str(run)],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    # air_index is the backend's last area index: the band its store gives for the
    # last hour the air stations' readings closed.
    band = summary["air_index"]
    assert band in BANDS
    assert band == _backends_last_band(run / "backend")
    level = BANDS.index(band) + 1
    # The strip settled on the palette's colour of the backend's final band.
    assert summary["display_colour"] == DISPLAY_PALETTES["eaqi"][level - 1]
    lines = (run / "sculpture" / "strip.txt").read_text().splitlines()
    colours = [line.split()[2].split("*")[0] for line in lines]
    assert colours[0] == "#000000" and colours[-1] == summary["display_colour"]
    assert len(set(colours)) >= 10          # it faded in, not jumped


def _backends_last_band(backend_dir: Path) -> str | None:
    config = backend_config.load(next(backend_dir.glob("*.toml")))
    assert [a.name for a in config.air_areas] == [AREA]
    area = config.air_areas[0]
    assert len(area.stations) == 6
    store = Store(config.store_path)
    try:
        heard = store.last_heard()
        newest = max(heard[d] for d in area.stations if d in heard)
        # The hour before the newest reading's: closed by that reading, published last.
        hour = int(newest) - int(newest) % HOUR_S - HOUR_S
        indexes = AirIndexes(config, store)
        index, _ = indexes.area(area, hour)
        band = indexes.document(index, newest)["band"]
        return band if isinstance(band, str) else None
    finally:
        store.close()


def test_live_view_panel_shows_the_strip_colour_and_band() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from rich.console import Console

    from knute.tools.cli.demo_view import sculpture_panel

    demo = SimpleNamespace(sculpture=SimpleNamespace(colour=lambda: "#e69f00", level=4))
    console = Console(record=True, width=100, color_system="truecolor")
    console.print(sculpture_panel(cast(Any, demo)))
    text = console.export_text(clear=False)
    assert "#e69f00" in text and "area index: poor (level 4)" in text
    assert "230;159;0" in console.export_text(styles=True)     # the swatch's background
    demo.sculpture = None
    console.print(sculpture_panel(cast(Any, demo)))
    assert "no index yet" in console.export_text()

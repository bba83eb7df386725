"""The light sculpture in ``knute demo``: the display firmware follows the area index."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from knute.firmware.config_display import DISPLAY_PALETTES
from knute.tools.sim.sculpture import area_level, index_message, pm2_5_level


@pytest.mark.parametrize(("pm2_5", "level"), [
    (0.0, 1), (5.0, 1), (5.1, 2), (15.0, 2), (15.1, 3), (50.0, 3), (50.1, 4), (90.0, 4),
    (90.1, 5), (140.0, 5), (140.1, 6), (500.0, 6)])
def test_demo_rule_bands_pm2_5_as_the_eaqi(pm2_5: float, level: int) -> None:
    assert pm2_5_level(pm2_5) == level


def test_demo_rule_takes_the_median_station() -> None:
    # Median of 4.0, 12.0, 60.0 is 12.0: fair, though one station is poor.
    assert area_level([60.0, 4.0, 12.0]) == 2
    assert area_level([8.0, 32.0]) == 3          # median 20.0
    assert area_level([]) is None
    doc = index_message(None, 1764676800, [])
    assert doc["status"] == "withheld" and doc["level"] is None
    assert index_message(4, 1764676800, ["0000000a"])["valid_until"] == "2025-12-02T12:02:00Z"


def test_demo_json_reports_the_sculpture(knute_bin: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [str(knute_bin), "demo", "--for", "12", "--json", "--meters", "4", "--air", "6",
         "--real-firmware", "0", "--workdir", str(run)],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    level = summary["air_index"]
    assert level in range(1, 7)
    # The strip settled on the palette's colour of the area's final level.
    assert summary["display_colour"] == DISPLAY_PALETTES["eaqi"][level - 1]
    lines = (run / "sculpture" / "strip.txt").read_text().splitlines()
    colours = [line.split()[2].split("*")[0] for line in lines]
    assert colours[0] == "#000000" and colours[-1] == summary["display_colour"]
    assert len(set(colours)) >= 10          # it faded in, not jumped


def test_live_view_panel_shows_the_strip_colour_and_band() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from rich.console import Console

    from knute.tools.cli.demo import _sculpture_panel

    demo = SimpleNamespace(sculpture=SimpleNamespace(colour=lambda: "#e69f00", level=4))
    console = Console(record=True, width=100, color_system="truecolor")
    console.print(_sculpture_panel(cast(Any, demo)))
    text = console.export_text(clear=False)
    assert "#e69f00" in text and "area index: poor (level 4)" in text
    assert "230;159;0" in console.export_text(styles=True)     # the swatch's background
    demo.sculpture = None
    console.print(_sculpture_panel(cast(Any, demo)))
    assert "no index yet" in console.export_text()

"""``knute bench air`` reports its figures (never judged by speed here)."""

from __future__ import annotations

import argparse
import json

import pytest

from knute.tools.bench import air


def test_the_air_bench_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert air.run(argparse.Namespace(stations=3, hours=3, json=True)) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["readings"] == 3 * 3 * 6
    # Hours 0 and 1 close: per hour 3 stations, each with its area once.
    assert figures["index_messages"] == 2 * 3 * 2
    for name in ("readings_per_s", "baseline_readings_per_s", "area_close_ms",
                 "overview_ms", "chart_48h_ms"):
        assert figures[name] > 0, name
    assert 0.0 <= figures["index_share"] < 1.0

"""``knute bench web`` on a small district: its figures, and its check that the page's sums
equal the store's."""

from __future__ import annotations

import argparse
import json

import pytest

from knute.tools.bench import web


def test_the_web_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(meters=20, days=3, seed=1, json=True)
    assert web.run(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["meters"] == 20 and figures["hourly_values"] == 21 * 3 * 24
    for key in ("district_document_s", "district_document_summed_s", "rollup_build_s",
                "hour_by_hour_rule_s", "baseline_sql_sum_s", "page_s", "meter_document_s"):
        assert figures[key] > 0, key
    assert figures["page_bytes"] > 10_000 and figures["store_bytes"] > 0

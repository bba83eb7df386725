"""Helpers for the reliability suite: each case lives in tools/bench/reliability/ and
is run here with short parameters (``make test``) or full ones (``-m slow``)."""

from __future__ import annotations

import json

from knute.tools.bench.reliability import CaseResult


def check(result: CaseResult, *, allow_duplicates: bool = True) -> None:
    """Fail with the case's figures and problems unless it kept every promise."""
    figures = json.dumps(result.row(), indent=1, sort_keys=True, default=str)
    assert not result.problems, f"{result.case}: problems\n{figures}"
    assert result.crashes == 0, f"{result.case}: crashes\n{figures}"
    assert result.lost == 0, f"{result.case}: accepted frames lost\n{figures}"
    if not allow_duplicates:
        assert result.duplicates == 0, figures

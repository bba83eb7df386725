"""The spool's file system fills up (a small tmpfs): the gateway keeps running,
evicts by its policy, counts and reports, never corrupts the spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_disk_full_short(tmp_path: Path) -> None:
    result = rel.case_disk_full(tmp_path, free_kb=512, overfill=1.5)
    check(result)
    assert result.evicted > 0


@needs_root
@pytest.mark.slow
def test_disk_full_three_times_over(tmp_path: Path) -> None:
    result = rel.case_disk_full(tmp_path, free_kb=4096, overfill=3.0)
    check(result)
    assert result.evicted > 0

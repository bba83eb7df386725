"""Power cuts (kill -9 of the unix-port firmware) at random points of the counter and
index writes: never a reused frame counter, the index never goes backwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check


@pytest.mark.parametrize("bits", [64, 32], ids=["upy64", "upy32"])
def test_five_power_cuts(tmp_path: Path, bits: int) -> None:
    result = rel.case_firmware_power_cut(tmp_path, cuts=5, bits=bits)
    check(result, allow_duplicates=False)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [64, 32], ids=["upy64", "upy32"])
def test_a_hundred_power_cuts(tmp_path: Path, bits: int) -> None:
    result = rel.case_firmware_power_cut(tmp_path, cuts=100, bits=bits)
    check(result, allow_duplicates=False)
    assert result.notes["cuts_inside_a_write"] > 0

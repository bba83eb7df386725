"""The text the protocol CLIs print, pinned, and their one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
KEY = "000102030405060708090a0b0c0d0e0f"
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "frames.json")
                     .read_text())["frames"]


def _knute(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(knute_bin), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_protocol_sizes_text(knute_bin: Path) -> None:
    result = _knute(knute_bin, "protocol", "sizes")
    assert result.returncode == 0
    assert result.stdout == (GOLDEN / "protocol_sizes.txt").read_text()


def test_protocol_sizes_json_meets_the_floors(knute_bin: Path) -> None:
    sizes = json.loads(_knute(knute_bin, "protocol", "sizes", "--json").stdout)
    assert set(sizes) == {"water_meter", "air_quality"}
    for row in sizes.values():
        assert set(row) == {"frame", "senml_cbor", "json"}
        assert row["frame"] <= 32
        assert row["frame"] * 3 <= row["senml_cbor"]


def test_decode_text(knute_bin: Path) -> None:
    result = _knute(knute_bin, "decode", VECTORS[0]["frame"], "--key", KEY)
    assert result.returncode == 0
    assert result.stdout == (GOLDEN / "decode_water.txt").read_text()


def test_encode_in_units_gives_the_vector(knute_bin: Path) -> None:
    result = _knute(knute_bin, "encode", "--kind", "water_meter", "--device-id", "00001234",
                    "--key", KEY, "--fcnt", "7", "index=123456", "profile_end_h=200",
                    "battery=85", "profile=0,2,31,45,12,8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VECTORS[0]["frame"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["decode", VECTORS[0]["frame"][:-2] + "00", "--key", KEY],
         "knute decode: frame rejected: frame_tag: authentication tag does not verify "
         "(wrong key, or the frame was altered)"),
        (["decode", "41", "--key", KEY],
         "knute decode: frame rejected: frame_short: frame shorter than header and tag"),
        (["decode", "zz", "--key", KEY], "knute decode: frame is not hex"),
        (["decode", VECTORS[0]["frame"], "--key", "00"],
         "knute decode: key must be 32 hex digits (16 bytes)"),
        (["encode", "--kind", "water_meter", "--device-id", "1", "--key", KEY, "--fcnt", "1",
          "battery=83"], "knute encode: battery: 83 is not a multiple of its step 5"),
        (["encode", "--kind", "gas_meter", "--device-id", "1", "--key", KEY, "--fcnt", "1"],
         "knute encode: frame_kind: unknown sensor kind (gas_meter)"),
        (["encode", "--kind", "water_meter", "--device-id", "1", "--key", KEY, "--fcnt", "1",
          "index=1"],
         "knute encode: payload_missing: a required payload field is missing (profile_end_h)"),
    ],
)
def test_errors_are_one_line_and_exit_2(knute_bin: Path, args: list[str], line: str) -> None:
    result = _knute(knute_bin, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == line + "\n"

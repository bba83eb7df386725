"""`knute decode --json` prints a frame as the gateway's MQTT reading: checked against
docs/schema/reading.schema.json and against gateway.message for every vector."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.gateway import message
from knute.protocol import frame

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "schema" / "reading.schema.json").read_text())
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())["frames"]
AT = "2026-09-22T12:34:56.789Z"
AT_S = 1790080496.789


def _decode(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(knute_bin), "decode", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_json_is_the_mqtt_reading(knute_bin: Path, vector: dict[str, Any]) -> None:
    result = _decode(knute_bin, vector["frame"], "--key", vector["key"], "--json",
                     "--received-at", AT)
    assert result.returncode == 0, result.stderr
    reading = json.loads(result.stdout)
    jsonschema.validate(reading, SCHEMA)
    decoded = frame.decode(bytes.fromhex(vector["frame"]), bytes.fromhex(vector["key"]))
    expected = message.reading_dict(
        decoded, device=f"{vector['device_id']:08x}", gateway_id="knute-decode",
        received_at=AT_S, receivers=[{"source": "knute-decode"}], source="radio", site=None)
    assert reading == expected
    assert reading["received_at"] == AT


def test_received_at_takes_unix_seconds_and_places_the_profile(knute_bin: Path) -> None:
    vector = VECTORS[0]
    result = _decode(knute_bin, vector["frame"], "--key", vector["key"], "--json",
                     "--received-at", "1790080496", "--source", "serial")
    reading = json.loads(result.stdout)
    assert reading["received_at"] == "2026-09-22T12:34:56.000Z"
    assert reading["source"] == "serial"
    assert reading["profile"] and reading["profile"][-1]["end"] <= "2026-09-22T14:00:00Z"


def test_bad_received_at_is_one_line(knute_bin: Path) -> None:
    vector = VECTORS[0]
    result = _decode(knute_bin, vector["frame"], "--key", vector["key"], "--json",
                     "--received-at", "yesterday")
    assert result.returncode == 2
    assert result.stderr == ("knute decode: --received-at yesterday: use unix seconds or UTC "
                             "ISO 8601, e.g. 2026-09-22T12:00:00Z\n")

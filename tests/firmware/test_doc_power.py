"""docs/firmware.md's power.sleep row gives every mode firmware/config.py accepts a meaning."""

from __future__ import annotations

import re
from pathlib import Path

from firmware.config import SLEEP_MODES

ROOT = Path(__file__).resolve().parents[2]


def test_every_sleep_mode_is_documented_with_its_meaning() -> None:
    text = (ROOT / "docs" / "firmware.md").read_text(encoding="utf-8")
    power = text.split("### `power`", 1)[1].split("###", 1)[0]
    row = next(line for line in power.splitlines() if line.startswith("| `sleep` |"))
    meanings = dict(re.findall(r"`([a-z]+)`: ([^;|]+)", row.split("|")[3]))
    assert set(meanings) == set(SLEEP_MODES)
    for mode, meaning in meanings.items():
        assert meaning.strip(), mode

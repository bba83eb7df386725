"""docs/protocol.md section 12 agrees with protocol/downlink.py and downlink.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from knute.protocol import cbor, downlink_send
from knute.protocol import downlink as dl

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
SECTION = DOC.split("## 12. Downlinks", 1)[1].split("\n## ", 1)[0]


def _sub(title: str) -> str:
    return SECTION.split(title, 1)[1].split("\n### ", 1)[0]


def _rows(text: str, heading: str = "") -> list[list[str]]:
    """The body rows of the first table in `text` whose heading row starts with `heading`."""
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if not line.startswith("|"):
            if inside:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not inside:
            inside = cells[0].startswith(heading)
            continue
        if not line.startswith("|---"):
            rows.append(cells)
    return rows


def test_worked_examples_are_the_vectors() -> None:
    doc = json.loads((ROOT / "tests" / "vectors" / "downlink.json").read_text())
    frames = {v["frame"] for v in doc["downlinks"]}
    shown = re.findall(r"^downlink\s+([0-9a-f]{34,})$", SECTION, flags=re.M)
    assert len(shown) >= 5
    assert set(shown) <= frames


def test_reason_table_is_the_codes() -> None:
    rows = _rows(_sub("### 12.4"), "reason")
    assert [r[0].strip("`") for r in rows] == [
        "dl_short", "dl_long", "dl_format", "dl_device", "dl_forged", "dl_payload",
        "dl_replay", "dl_order"]
    assert {r[0].strip("`") for r in rows} == set(dl.DL_REASONS)


def test_command_and_result_tables_are_the_codes() -> None:
    section = _sub("### 12.5")
    ops = {int(r[0]): r[1].strip("`") for r in _rows(section, "op")}
    assert ops == {getattr(downlink_send, name): name[3:].lower()
                   for name in dir(downlink_send) if name.startswith("OP_")}
    results = [(int(r[0]), r[1].strip("`")) for r in _rows(section, "code")]
    assert results == list(enumerate(dl.RESULTS))


def test_chunk_table_is_chunk_capacity() -> None:
    seen = []
    for row in _rows(_sub("### 12.5"), "SF"):
        for sf in row[0].split(","):
            seen.append(int(sf))
            assert dl.EU868_MAX_PAYLOAD[int(sf)] == int(row[1])
            assert dl.chunk_capacity(int(sf)) == int(row[2])
    assert sorted(seen) == sorted(dl.EU868_MAX_PAYLOAD)


def test_config_table_is_the_whitelist() -> None:
    rows = _rows(_sub("### 12.8"), "code")
    assert len(rows) == len(dl.CONFIG_KEYS)
    for row, (code, section, key, lo, hi) in zip(rows, dl.CONFIG_KEYS, strict=True):
        assert row[0] == str(code)
        assert row[1] == f"`{section}.{key}`"
        assert row[2] == f"{lo}–{hi}"


def test_report_example() -> None:
    section = _sub("### 12.7")
    series = [dl.FLAG_WANT | dl.FLAG_CLOCK, dl.report_entry(2, dl.APPLIED),
              dl.report_entry(22, dl.CMD_RANGE, 3)]
    assert f"dl = [{', '.join(map(str, series))}]" in section
    shown = re.search(r"CBOR ([0-9a-f ]+?)\s{2,}", section)
    assert shown is not None
    assert bytes.fromhex(shown.group(1)) == cbor.encode(series)
    assert dl.parse_report(series) == (3, [(2, "applied", 0), (22, "cmd_range", 3)])

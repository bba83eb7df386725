"""docs/protocol.md agrees with the code: kinds tables, examples and reasons."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.reasons import DESCRIPTIONS
from protocol import errors, errors_decode, kinds, stream

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def _kind_rows(kind_name: str) -> list[list[str]]:
    section = DOC.split(f"`{kind_name}`", 1)[1].split("###", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_kind_tables_match_protocol_kinds() -> None:
    for kid, kind in kinds.KINDS.items():
        assert f"### Kind {kid}: `{kind['name']}`" in DOC
        rows = _kind_rows(kind["name"])
        assert len(rows) == len(kind["fields"])
        for pos, (row, field) in enumerate(zip(rows, kind["fields"], strict=True)):
            assert row[0] == str(pos)
            assert row[1] == field["name"]
            assert row[2] == field["type"]
            assert row[3] == field["unit"]
            assert row[4] == str(field.get("mul", 1))
            assert row[5] == str(field.get("div", 1))
            if field["type"] == "bits":
                for bit, name in enumerate(field["bits"]):
                    assert f"{bit} {name}" in row[8]
            else:
                assert (row[6], row[7]) == (str(field["min"]), str(field["max"]))
            assert ("optional" in row[8]) == bool(field.get("optional"))
            assert ("nullable" in row[8]) == bool(field.get("nullable"))


def test_worked_examples_are_the_vectors() -> None:
    vectors = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())["frames"]
    by_frame = {v["frame"] for v in vectors}
    shown = re.findall(r"^frame\s+([0-9a-f]{40,})$", DOC, flags=re.M)
    assert len(shown) >= 3
    assert set(shown) <= by_frame
    record = stream.encode_record(stream.REC_FRAME, bytes.fromhex(vectors[0]["frame"])).hex()
    assert record in DOC


def test_every_reason_is_documented() -> None:
    # Wire-format reasons and the receiver's frame checks are the protocol's;
    # the gateway's own (packet-forwarder datagrams, overload, ...) are operations'.
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    codes = {v for module in (errors, errors_decode) for k, v in vars(module).items()
             if k.isupper() and isinstance(v, str)}
    codes |= {"unknown_device", "replay", "duplicate", "counter_reset"}
    for code in codes:
        assert f"`{code}`" in DOC, code
    for code in codes | set(DESCRIPTIONS):
        assert code in DESCRIPTIONS, code
        assert f"`{code}`" in DOC or f"`{code}`" in operations, code

"""docs/protocol.md agrees with the code: kinds tables, examples and reasons."""

from __future__ import annotations

import json
import re
from pathlib import Path

from knute.gateway import pipeline_checks
from knute.gateway.reasons import DESCRIPTIONS
from knute.protocol import errors, errors_decode, frame, kinds, stream

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


def test_short_record_line_is_the_record() -> None:
    # §7.4 shows the record as "00 | <first bytes> ... <last bytes> | 00": both ends
    # must be the ends of the COBS bytes the code sends (a hand-typed byte drifted once).
    vectors = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())["frames"]
    record = stream.encode_record(stream.REC_FRAME, bytes.fromhex(vectors[0]["frame"]))
    section = DOC.split("### 7.4", 1)[1].split("##", 1)[0]
    short = re.search(r"^00 \| ([0-9a-f ]+) \.\.\. ([0-9a-f ]+) \| 00$", section, flags=re.M)
    assert short is not None, "§7.4 has no short record line"
    head = bytes.fromhex(short.group(1))
    tail = bytes.fromhex(short.group(2))
    assert len(head) >= 4 and len(tail) >= 4
    assert record[1:-1].startswith(head)
    assert record[1:-1].endswith(tail)


def _section(title: str) -> str:
    return DOC.split(title, 1)[1].split("\n## ", 1)[0]


def test_check_order_examples_are_what_parse_header_says() -> None:
    section = " ".join(_section("## 8. Receiver rules").split())
    examples = re.findall(r"(\d+)-byte (?:frame|one) with control byte `0x([0-9a-f]{2})`"
                          r"(?: is rejected)? as `(\w+)`", section)
    assert len(examples) >= 3
    for length, ctrl, reason in examples:
        buf = bytes((int(ctrl, 16),)) + bytes(range(1, int(length)))
        try:
            frame.parse_header(buf)
        except errors.FrameError as err:
            assert err.reason == reason, (length, ctrl)
        else:
            raise AssertionError(f"{length}-byte frame 0x{ctrl} passes parse_header")


def test_counter_rules_are_the_gateways() -> None:
    section = " ".join(_section("## 8. Receiver rules").split())
    below = pipeline_checks.DEFAULT_RESET_BELOW
    assert (f"the new counter is below {below} while the last accepted one is {below} "
            "or more") in section
    assert f"`counter_reset_below`, default {below}" in section
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"| `counter_reset_below` | `{below}` |" in operations
    # The examples of §8 and the reason table, against the gateway's ReplayGuard.
    guard = pipeline_checks.ReplayGuard({1: 5, 2: 100, 3: 100, 4: 7})
    guard.advance(4, 7, b"accepted")
    assert "e.g. 3 after 5, or 20 after 100" in section
    assert guard.check(1, 3, b"") == "replay"
    assert guard.check(2, 20, b"") == "replay"
    assert guard.check(3, below - 1, b"") == "counter_reset"
    assert guard.check(4, 7, b"accepted") == "duplicate"
    assert guard.check(4, 7, b"other bytes") == "replay"
    assert f"| `counter_reset` | receiver | counter below {below} after one of {below} or more" \
        in DOC

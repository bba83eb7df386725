"""The reading schema ships inside the backend package: an installed backend needs no repo.

The copy in ``backend/schema/`` must equal the contract's
``docs/schema/reading.schema.json``; the built wheel carries it, and the
backend installed from that wheel validates readings from a folder far from
the source tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.ingest import BadReading, ReadingChecker, packaged_schema
from tests.backend.factory import reading, topic

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def test_the_packaged_schema_is_the_contracts() -> None:
    assert packaged_schema() == (ROOT / "docs" / "schema" / "reading.schema.json").read_text(
        encoding="utf-8"), ("backend/schema/reading.schema.json differs from "
                            "docs/schema/reading.schema.json: copy the contract's over")


def test_the_packaged_schema_is_a_valid_draft_2020_12_schema() -> None:
    # The backend checks only a schema given in its configuration at start-up; this one
    # is checked here.
    jsonschema.Draft202012Validator.check_schema(json.loads(packaged_schema()))


def test_the_checker_uses_the_packaged_schema_unless_told_otherwise(tmp_path: Path) -> None:
    doc = reading("00000001", 1, 1767571200, [1.0], 1.0)
    assert ReadingChecker().check(topic(doc), json.dumps(doc).encode())["id"] == doc["id"]
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"type": "object", "required": ["never"]}))
    with pytest.raises(BadReading, match="never"):
        ReadingChecker(strict).check(topic(doc), json.dumps(doc).encode())


def test_the_installed_wheel_validates_without_the_source_tree(tmp_path: Path,
                                                               knute_wheel: Path) -> None:
    wheel = knute_wheel
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True,
                   timeout=TIMEOUT_S)
    doc = reading("00000001", 1, 1767571200, [1.0], 1.0)
    script = textwrap.dedent(f"""
        import json, sys
        import knute.backend.ingest as ingest
        assert ingest.__file__.startswith({str(target)!r}), ingest.__file__
        checker = ingest.ReadingChecker()
        doc = json.loads({json.dumps(json.dumps(doc))})
        print(checker.check({topic(doc)!r}, json.dumps(doc).encode())["id"])
        doc["fcnt"] = "x"
        try:
            checker.check({topic(doc)!r}, json.dumps(doc).encode())
        except ingest.BadReading as exc:
            print(exc)
    """)
    away = tmp_path / "elsewhere"
    away.mkdir()
    # -S: no site-packages but the installed wheel's folder (and the venv's, for
    # jsonschema, appended after it); -I keeps the source tree off sys.path.
    site = [p for p in sys.path if p.endswith("site-packages")]
    done = subprocess.run([sys.executable, "-I", "-c",
                           f"import sys; sys.path[:0] = [{str(target)!r}]; "
                           f"sys.path += {site!r}; exec({script!r})"],
                          cwd=away, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == doc["id"]
    assert lines[1].startswith("schema: at fcnt:")

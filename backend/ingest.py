"""Checking one MQTT message against the reading contract (pure but for the schema file).

``check(topic, payload)`` returns the reading document or a ``BadReading``
with a one-line reason naming what is wrong (JSON, the schema path of the
first error, or a topic that does not match the payload).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]


# The contract's schema ships inside the package (a copy of
# docs/schema/reading.schema.json, held equal by tests/backend/test_schema_packaged.py),
# so an installed backend validates without the source tree.
def packaged_schema() -> str:
    """The text of the reading schema shipped in this package."""
    return (resources.files(__package__ or "backend").joinpath("schema")
            .joinpath("reading.schema.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=8)
def _validator(text: str, check: bool) -> Any:
    """The validator of one schema's text, made once per process (a backend builds a
    checker per consumer); with ``check``, the schema is first checked against its
    meta-schema (20-60 ms of CPU)."""
    schema = json.loads(text)
    if check:
        jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class BadReading(Exception):
    """A message that is not a valid reading; ``str()`` is the reason in one line."""


class ReadingChecker:
    """Validates readings against the packaged reading schema (or ``schema_path``)."""

    def __init__(self, schema_path: Path | None = None) -> None:
        text = schema_path.read_text(encoding="utf-8") if schema_path else packaged_schema()
        # An operator's schema is checked against the meta-schema; the packaged one is
        # by tests/backend/test_schema_packaged.py rather than at every start.
        self.validator = _validator(text, check=schema_path is not None)

    def check(self, topic: str, payload: bytes) -> dict[str, Any]:
        """The reading in ``payload`` (published on ``topic``), or raise ``BadReading``."""
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadReading(f"not JSON: {exc}") from None
        error = (None if self.validator.is_valid(doc)
                 else jsonschema.exceptions.best_match(self.validator.iter_errors(doc)))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(document)"
            message = error.message if len(error.message) < 160 else error.message[:157] + "..."
            raise BadReading(f"schema: at {where}: {message}")
        parts = topic.split("/")
        if len(parts) >= 3 and (parts[-3], parts[-2]) != (doc["kind"], doc["device"]):
            raise BadReading(f"topic names {parts[-3]}/{parts[-2]} but the reading is "
                             f"{doc['kind']}/{doc['device']}")
        return dict(doc)

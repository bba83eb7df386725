"""MQTT command messages: the parser and docs/schema/downlink_command.schema.json agree,
and status messages match docs/schema/downlink_status.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.gateway.downlink_commands import Command
from knute.gateway.downlink_mqtt import parse_command
from knute.gateway.downlink_status import status_message
from knute.gateway.errors import KnuteError

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"
COMMAND = jsonschema.Draft202012Validator(
    json.loads((SCHEMAS / "downlink_command.schema.json").read_text()))
STATUS = jsonschema.Draft202012Validator(
    json.loads((SCHEMAS / "downlink_status.schema.json").read_text()))

GOOD: list[dict[str, Any]] = [
    {"id": "a", "command": "time"},
    {"id": "b", "command": "config", "values": {"water.sends_per_day": 4, "profile_len": 6}},
    {"id": "c", "command": "config", "values": {"3": 2000}, "expires_in_s": 3600},
    {"id": "d", "command": "ack"},
    {"id": "e", "command": "ack", "bits": 33},
    {"id": "f", "command": "rekey"},
    {"id": "g", "command": "reboot", "expires_in_s": 60.5},
]
BAD: list[Any] = [
    [], "x", {"command": "time"}, {"id": "", "command": "time"}, {"id": "x" * 65, "command":
    "time"}, {"id": "a", "command": "warp"}, {"id": "a", "command": "config"},
    {"id": "a", "command": "config", "values": {}},
    {"id": "a", "command": "config", "values": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}},
    {"id": "a", "command": "config", "values": {"water.sends_per_day": "4"}},
    {"id": "a", "command": "time", "values": {"water.sends_per_day": 4}},
    {"id": "a", "command": "time", "bits": 1},
    {"id": "a", "command": "ack", "bits": -1},
    {"id": "a", "command": "ack", "bits": True},
    {"id": "a", "command": "time", "expires_in_s": 0},
    {"id": "a", "command": "time", "extra": 1},
]


@pytest.mark.parametrize("doc", GOOD)
def test_good_commands_pass_both(doc: dict[str, Any]) -> None:
    COMMAND.validate(doc)
    assert parse_command(json.dumps(doc).encode())["command"] == doc["command"]


@pytest.mark.parametrize("doc", BAD)
def test_bad_commands_fail_both(doc: Any) -> None:
    assert not COMMAND.is_valid(doc)
    with pytest.raises(KnuteError):
        parse_command(json.dumps(doc).encode())


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"{" * 5000, b"null"])
def test_garbage_is_one_error(payload: bytes) -> None:
    with pytest.raises(KnuteError):
        parse_command(payload)


def test_values_out_of_range_name_the_key() -> None:
    with pytest.raises(KnuteError, match=r"air.interval_s: 59 is outside 60..86400"):
        parse_command(b'{"id": "a", "command": "config", "values": {"air.interval_s": 59}}')


def test_status_messages_match_the_schema() -> None:
    base = Command(device_id=0x1234, cmd_id=7, op="config", args={"values": {"3": 5}},
                   state="rejected", created_at=0.0, expires_at=100.0, updated_at=5.0,
                   ref="ops-1", result="cmd_range", detail=3, sends=1)
    doc = status_message(base, "gw", "water_meter")
    STATUS.validate(doc)
    assert doc["key"] == "water.burst_lph" and doc["result"] == "cmd_range"
    for state in ("queued", "sent", "applied", "expired", "cancelled"):
        plain = Command(device_id=1, cmd_id=1, op="time", args={}, state=state,
                        created_at=0.0, expires_at=1.0, updated_at=0.5)
        STATUS.validate(status_message(plain, "gw", "air_quality"))

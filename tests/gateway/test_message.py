"""gateway.message: the reading JSON against the kinds table and the published schema."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from knute.gateway import message
from knute.protocol import frame, kinds
from tests.protocol.strategies import KIND_NAMES, readings

ROOT = Path(__file__).resolve().parents[2]
READING = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/reading.schema.json").read_text()))
RECEIVERS = [{"source": "lora0", "rssi_dbm": -101, "snr_db": -3.5, "freq_hz": 868_300_000,
              "sf": 10}]


def _frame(kind: str, values: dict[str, Any], device_id: int = 0x1234,
           fcnt: int = 7) -> dict[str, Any]:
    return {"kind": kind, "kind_id": kinds.kind_id(kind), "device_id": device_id,
            "fcnt": fcnt, "tag_len": 4, "values": values}


def _reading(frm: dict[str, Any], received_at: float, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"device": message.device_name(frm["device_id"]),
                            "gateway_id": "gw-test", "received_at": received_at,
                            "receivers": RECEIVERS, "source": "radio", "site": None}
    args.update(kw)
    out: dict[str, Any] = json.loads(message.reading_json(frm, **args))
    return out


def _utc(text: str) -> int:
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def test_topic_and_names() -> None:
    assert message.topic("city", "water_meter", "00001234") == "city/water_meter/00001234/up"
    assert message.status_topic("city", "gw-1") == "city/gateway/gw-1/status"
    assert message.device_name(0x1234) == "00001234"
    assert message.device_name(0xFFFFFFFF) == "ffffffff"


def test_water_meter_reading() -> None:
    received = 1_714_564_800.25          # 2024-05-01T12:00:00.250Z, unix hour 476268
    end_h = 476_268 % 256
    values = {"index": 123_456, "profile_end_h": end_h, "alarms": 0b000011, "battery": 17,
              "profile": [5, 0, 12], "max_flow": 900}
    doc = _reading(_frame("water_meter", values), received, site={"name": "Storgata 1"})
    assert doc["id"] == "00001234:7"
    assert doc["device"] == "00001234" and doc["fcnt"] == 7 and doc["kind"] == "water_meter"
    assert doc["received_at"] == "2024-05-01T12:00:00.250Z"
    assert doc["readings"] == {"index": {"value": 123_456, "unit": "L"},
                               "max_flow": {"value": 900, "unit": "L/h"}}
    assert doc["alarms"] == ["leak", "burst"]
    assert doc["battery"] == 85
    assert doc["profile"] == [
        {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z", "litres": 5},
        {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T11:00:00Z", "litres": 0},
        {"start": "2024-05-01T11:00:00Z", "end": "2024-05-01T12:00:00Z", "litres": 12},
    ]
    assert doc["receivers"] == RECEIVERS and doc["gateway"] == "gw-test"
    assert doc["source"] == "radio" and doc["site"] == {"name": "Storgata 1"}
    READING.validate(doc)


def test_air_quality_reading_nulls_and_status_bits() -> None:
    values = {"pm1": 52, "pm2_5": None, "pm10": 143, "temperature": -35, "humidity": 64,
              "pressure": 10132, "status": 0b10001}
    doc = _reading(_frame("air_quality", values, device_id=0xABCDEF01, fcnt=0), 0.0,
                   source="serial")
    assert doc["id"] == "abcdef01:0"
    assert doc["received_at"] == "1970-01-01T00:00:00.000Z"
    assert doc["readings"]["pm1"] == {"value": 5.2, "unit": "µg/m³"}
    assert doc["readings"]["pm2_5"] == {"value": None, "unit": "µg/m³"}
    assert doc["readings"]["temperature"] == {"value": -3.5, "unit": "°C"}
    assert doc["readings"]["pressure"] == {"value": 1013.2, "unit": "hPa"}
    assert "no2" not in doc["readings"]          # optional field left off the frame
    assert "status" not in doc["readings"]
    assert doc["alarms"] == ["pm_fault", "warmup"]
    assert doc["battery"] is None and doc["profile"] == []
    assert "site" not in doc
    READING.validate(doc)


def test_profile_end_hour_slack_boundaries() -> None:
    received = 1_714_564_800.0           # hour 476268 exactly
    hour = 476_268
    # Two hours ahead is still taken as ahead; three hours ahead means 253 hours ago.
    assert message.resolve_end_hour((hour + 2) % 256, received) == hour + 2
    assert message.resolve_end_hour((hour + 3) % 256, received) == hour + 3 - 256
    assert message.resolve_end_hour(hour % 256, received) == hour
    assert message.resolve_end_hour((hour - 1) % 256, received) == hour - 1


@given(received=st.floats(0, 4_000_000_000, allow_nan=False),
       offset=st.integers(-253, 2), slots=st.integers(1, 24))
def test_profile_resolution_property(received: float, offset: int, slots: int) -> None:
    """Any end hour within [received - 253 h, received + 2 h] resolves to itself."""
    hour = int(received // 3600)
    end = hour + offset
    if end < slots:
        return
    assert message.resolve_end_hour(end % 256, received) == end
    out = message.profile_slots(range(slots), end, "L")
    assert [_utc(s["end"]) // 3600 for s in out] == list(range(end - slots + 1, end + 1))
    assert all(_utc(s["end"]) - _utc(s["start"]) == 3600 for s in out)


@given(st.sampled_from(KIND_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), readings(name))),
    st.integers(0, 0xFFFFFFFF), st.integers(0, frame.MAX_FCNT),
    st.floats(1_000_000_000, 3_000_000_000, allow_nan=False))
def test_any_frame_matches_schema_and_kinds_table(kind_values: tuple[str, dict[str, Any]],
                                                  device_id: int, fcnt: int,
                                                  received: float) -> None:
    """Every valid frame gives schema-valid JSON whose values are kinds.scaled() of the raw."""
    kind_name, values = kind_values
    frm = _frame(kind_name, values, device_id, fcnt)
    doc = _reading(frm, received)
    READING.validate(doc)
    kind = kinds.KINDS[kinds.kind_id(kind_name)]
    alarms: list[str] = []
    for field in kind["fields"]:
        name = field["name"]
        if name not in values:
            assert name not in doc["readings"]
            continue
        if field["type"] == "bits":
            alarms.extend(kinds.bit_names(field, values[name]))
        elif name == "dl":
            assert doc["dl"] == message.report_dict(values[name])
        elif field["type"] == "series":
            key = "litres" if field["unit"] == "L" else "value"
            assert [s[key] for s in doc["profile"]] == kinds.scaled(field, values[name])
        elif name == "battery":
            assert doc["battery"] == kinds.scaled(field, values[name])
        elif name.endswith("_end_h"):
            ends = [_utc(s["end"]) // 3600 for s in doc["profile"]]
            assert ends[-1] % 256 == values[name]
        else:
            assert doc["readings"][name] == {"value": kinds.scaled(field, values[name]),
                                             "unit": field["unit"]}
    assert doc["alarms"] == alarms
    assert message.is_alarm(frm) == bool(alarms)
    assert doc["id"] == f"{device_id:08x}:{fcnt}"


def test_docs_examples_match_the_schemas() -> None:
    """Every JSON example in docs/mqtt.md validates against its schema."""
    status = jsonschema.Draft202012Validator(
        json.loads((ROOT / "docs/schema/status.schema.json").read_text()))
    air_index = jsonschema.Draft202012Validator(
        json.loads((ROOT / "docs/schema/air_index.schema.json").read_text()))
    text = (ROOT / "docs/mqtt.md").read_text()
    blocks = [part.split("```", 1)[0] for part in text.split("```json")[1:]]
    assert len(blocks) >= 3
    kinds_seen = set()
    for block in blocks:
        doc = json.loads(block)
        if "status" in doc and "gateway" in doc and "id" not in doc:
            status.validate(doc)
        elif doc.get("scope") in ("station", "area"):
            air_index.validate(doc)
        else:
            READING.validate(doc)
            kinds_seen.add(doc["kind"])
    assert kinds_seen == set(KIND_NAMES)        # an example of each kind


def test_the_downlink_report_is_published_as_dl() -> None:
    """docs/protocol.md 12.7's example: clock asked, command 2 applied, 22 refused (code 3)."""
    values = {"index": 5, "profile_end_h": 10, "alarms": 0, "battery": 20, "profile": [1],
              "dl": [3, 512, 5683]}
    doc = _reading(_frame("water_meter", values), 1_796_158_014.0)
    READING.validate(doc)
    assert doc["dl"] == {"flags": ["want", "clock"], "results": [
        {"command": 2, "result": "applied", "detail": 0},
        {"command": 22, "result": "cmd_range", "detail": 3}]}
    assert "max_flow" not in doc["readings"] and "dl" not in doc["readings"]
    del values["dl"]
    assert "dl" not in _reading(_frame("water_meter", values), 1_796_158_014.0)

"""The silent-node alarm's pure core (gateway/silence.py), its config and its message.

End to end on real processes (gateway, Mosquitto, a packet forwarder): tests/e2e/
test_silent_node.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.gateway import config
from knute.gateway.conditions import condition_row
from knute.gateway.errors import KnuteError
from knute.gateway.silence import HEARD, SILENT, SilenceSettings, SilenceWatch

ROOT = Path(__file__).resolve().parents[2]
CONDITION = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/condition.schema.json").read_text()))
H = 3600.0
METER, AIR, OTHER = 0x51000001, 0x51000002, 0x51000003
T0 = 1_767_225_600.0      # 2026-01-01T00:00:00Z


def _devices(last_seen: float | None = None
             ) -> list[tuple[int, str, float | None, float | None]]:
    return [(METER, "water_meter", last_seen, None), (AIR, "air_quality", last_seen, None),
            (OTHER, "noise_level", last_seen, None)]


def test_silent_only_after_the_missed_intervals_and_heard_clears_it() -> None:
    watch = SilenceWatch(SilenceSettings(missed_intervals=3), started_at=T0)
    watch.heard(METER, "water_meter", T0)
    # 3 intervals of 6 h and half an interval of slack: 21 h.
    assert [c.device_id for c in watch.check(_devices(), T0 + 21 * H - 1)] == [AIR]
    changes = watch.check(_devices(), T0 + 21 * H)
    assert [(c.device_id, c.condition, c.since) for c in changes] == [
        (METER, SILENT, T0 + 21 * H)]
    assert watch.check(_devices(), T0 + 40 * H) == []       # raised once
    assert watch.silent() == [METER, AIR]
    back = watch.heard(METER, "water_meter", T0 + 41 * H)
    assert back is not None and (back.condition, back.since, back.last_seen) == (
        HEARD, T0 + 41 * H, T0)
    assert watch.heard(METER, "water_meter", T0 + 42 * H) is None
    assert watch.stats()["silent"] == 1 and watch.stats()["devices"] == ["51000002"]


def test_a_node_that_loses_single_frames_is_never_silent() -> None:
    watch = SilenceWatch(SilenceSettings(), started_at=T0)
    t = T0
    for n in range(200):                 # every third frame lost: gaps of 12 h
        if n % 3 != 2:
            watch.heard(METER, "water_meter", t)
        assert watch.check([(METER, "water_meter", None, None)], t + 5 * H) == []
        t += 6 * H


def test_registry_last_seen_and_gateway_start_are_the_reference() -> None:
    watch = SilenceWatch(SilenceSettings(), started_at=T0)
    # Known to the registry, last heard long ago: silent at the first check.
    old = watch.check([(METER, "water_meter", T0 - 30 * H, None)], T0)
    assert [(c.condition, c.since, c.last_seen) for c in old] == [
        (SILENT, T0 - 9 * H, T0 - 30 * H)]
    # Never heard: counted from the gateway's start, not raised at once.
    assert watch.check([(AIR, "air_quality", None, None)], T0 + 2000) == []
    assert len(watch.check([(AIR, "air_quality", None, None)], T0 + 2100)) == 1
    # A device removed from the registry is forgotten.
    watch.check([], T0 + 3000)
    assert watch.silent() == []


def test_unknown_kind_and_zero_turn_it_off() -> None:
    watch = SilenceWatch(SilenceSettings(missed_intervals=0), started_at=T0)
    assert watch.check(_devices(), T0 + 1e9) == []
    watch = SilenceWatch(SilenceSettings(), started_at=T0)
    assert OTHER not in [c.device_id for c in watch.check(_devices(), T0 + 1e9)]


def test_condition_messages_match_the_schema_and_the_docs_example() -> None:
    watch = SilenceWatch(SilenceSettings(), started_at=T0)
    watch.heard(METER, "water_meter", T0)
    silent = watch.check([(METER, "water_meter", None, None)], T0 + 21 * H)[0]
    heard = watch.heard(METER, "water_meter", T0 + 30 * H)
    assert heard is not None
    docs = []
    for change in (silent, heard):
        row = condition_row(change, prefix="city", gateway_id="gw1")
        assert row.retain and row.topic == "city/water_meter/51000001/condition"
        doc = json.loads(row.payload)
        CONDITION.validate(doc)
        docs.append(doc)
    assert docs[0]["since"] == "2026-01-01T21:00:00.000Z"
    assert docs[0]["last_seen"] == "2026-01-01T00:00:00.000Z"
    assert (docs[1]["condition"], docs[1]["reason"], docs[1]["detail"]) == ("heard", None, None)
    text = (ROOT / "docs/mqtt.md").read_text()
    block = text.partition("### Silent nodes")[2].split("```")[1]
    example = json.loads(block)
    CONDITION.validate(example)
    assert {k: v for k, v in example.items() if k != "gateway"} == {
        k: v for k, v in docs[0].items() if k != "gateway"} | {"device": "51000003"}


def _load(tmp_path: Path, text: str) -> config.GatewayConfig:
    path = tmp_path / "gw.toml"
    top = "" if text.startswith("[") else text    # a root key goes before the tables
    path.write_text(top + '[gateway]\nid = "g"\n[[serial]]\nname = "s"\nurl = "/dev/null"\n'
                    + (text if text.startswith("[") else ""))
    return config.load(str(path))


def test_silence_config_defaults_overrides_and_errors(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.silence.missed_intervals == 3
    assert cfg.silence.interval_s == {"water_meter": 21600.0, "air_quality": 600.0}
    cfg = _load(tmp_path, "[silence]\nmissed_intervals = 5\n"
                          "[silence.interval_s]\nwater_meter = 3600\nnoise_level = 900\n")
    assert cfg.silence.missed_intervals == 5
    assert cfg.silence.interval_s["water_meter"] == 3600.0
    assert cfg.silence.limit_s("noise_level") == 5.5 * 900
    for text, message in [
        ("[silence]\nmissed = 2\n", r"gw\.toml: silence\.missed: unknown key$"),
        ("[silence]\nmissed_intervals = -1\n", r"silence\.missed_intervals: must be an "
                                               r"integer 0\.\.1000, got -1$"),
        ("[silence.interval_s]\nwater_meter = \"6h\"\n",
         r"silence\.interval_s\.water_meter: must be seconds"),
        ("silence = 3\n", r"silence: must be a table"),
    ]:
        with pytest.raises(KnuteError, match=message):
            _load(tmp_path, text)

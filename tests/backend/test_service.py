"""The backend's core without a broker: bad input counted, alerts raised once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from knute.backend.config import Config, District
from knute.backend.service import Backend
from knute.backend.store_sqlite import Store
from tests.backend.factory import HOUR_S, T0, reading, topic


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, document: Mapping[str, Any]) -> None:
        self.messages.append((topic, dict(document)))


@pytest.fixture
def backend(tmp_path: Path) -> tuple[Backend, Published]:
    config = Config(path=tmp_path / "backend.toml", store_path=tmp_path / "b.sqlite",
                    districts=(District("sentrum", ("1000a001",), (), ("00000001",
                                                                         "00000002"), 2),))
    published = Published()
    return Backend(config, Store(config.store_path), published), published


def test_bad_input_is_counted_and_logged_in_one_line(
        backend: tuple[Backend, Published], capsys: pytest.CaptureFixture[str]) -> None:
    core, _ = backend
    doc = reading("00000001", 1, T0 + HOUR_S, [1], 1)
    assert core.handle("knute/water_meter/00000001/up", b"{not json") == "bad"
    broken = dict(doc, fcnt=-1)
    assert core.handle(topic(doc), json.dumps(broken).encode()) == "bad"
    assert core.handle("knute/water_meter/00000099/up", json.dumps(doc).encode()) == "bad"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert "not JSON" in lines[0]
    assert "schema: at fcnt:" in lines[1]
    assert "topic names water_meter/00000099" in lines[2]
    assert core.store.counters() == {"bad": 3}


def test_an_unassigned_meter_is_counted(backend: tuple[Backend, Published]) -> None:
    core, _ = backend
    doc = reading("0000abcd", 1, T0 + HOUR_S, [1], 1)
    assert core.handle(topic(doc), json.dumps(doc).encode()) == "stored"
    assert core.store.counters()["unassigned"] == 1


def test_continuous_flow_opens_one_retained_alert_with_its_evidence(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    for i in range(5):       # 30 hours of 4 L/h, never zero
        doc = reading("00000001", i + 1, T0 + (i + 1) * 6 * HOUR_S, [4] * 6, 24 * (i + 1))
        core.handle(topic(doc), json.dumps(doc).encode())
        core.handle(topic(doc), json.dumps(doc).encode())      # a duplicate changes nothing
    flow = [(t, d) for t, d in published.messages if "/continuous_flow/" in t]
    assert len(flow) == 1
    t, doc = flow[0]
    assert t == "knute/alert/continuous_flow/00000001"
    assert doc["state"] == "open" and doc["opened_at"] == "2026-01-06T00:00:00Z"
    assert len(doc["evidence"]) == 24 and doc["evidence"][0]["hour"] == "2026-01-05T00:00:00Z"
    # Two hours without flow close it.
    doc2 = reading("00000001", 6, T0 + 36 * HOUR_S, [4, 4, 4, 4, 0, 0], 136)
    core.handle(topic(doc2), json.dumps(doc2).encode())
    closed = [d for t, d in published.messages if "/continuous_flow/" in t][-1]
    assert closed["state"] == "closed" and closed["closed_at"] == "2026-01-06T12:00:00Z"


def test_a_node_alarm_and_a_silent_meter_raise_alerts(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    doc = reading("00000002", 1, T0 + 6 * HOUR_S, [0] * 6, 0, alarms=("burst",))
    core.handle(topic(doc), json.dumps(doc).encode())
    core.evaluate(T0 + 6 * HOUR_S + 4 * 21600)
    core.evaluate(T0 + 6 * HOUR_S + 4 * 21600 + 60)     # still silent: nothing new to say
    names = [t for t, d in published.messages if d["state"] == "open"]
    assert names == ["knute/alert/alarm_burst/00000002", "knute/alert/silent/00000002"]
    assert [t for t, _ in core.raised_alerts()] == ["knute/alert/alarm_burst/00000002",
                                                     "knute/alert/silent/00000002"]
    # Heard again, without the alarm: both close.
    doc2 = reading("00000002", 2, T0 + 30 * HOUR_S, [0] * 6, 0)
    core.handle(topic(doc2), json.dumps(doc2).encode())
    core.evaluate(T0 + 31 * HOUR_S)
    last = {t: d["state"] for t, d in published.messages}
    assert last == {"knute/alert/alarm_burst/00000002": "closed",
                    "knute/alert/silent/00000002": "closed"}
    assert len(published.messages) == 4


def test_district_night_leakage_alert(backend: tuple[Backend, Published]) -> None:
    # Inlet 400 L/h at night, households 10 L/h each; MNF 400 − 2 × 1.7 = 396.6 > 100.
    core, published = backend
    for fcnt, end in enumerate((T0 + 6 * HOUR_S, T0 + 30 * HOUR_S), start=1):
        n = 6 if fcnt == 1 else 24
        inlet = reading("1000a001", fcnt, end, [400] * n, 400 * (6 + 24 * (fcnt - 1)))
        core.handle(topic(inlet), json.dumps(inlet).encode())
        for home in ("00000001", "00000002"):
            doc = reading(home, fcnt, end, [10] * n, 10 * (6 + 24 * (fcnt - 1)))
            core.handle(topic(doc), json.dumps(doc).encode())
    core.evaluate(T0 + 31 * HOUR_S)
    [(t, doc)] = [(t, d) for t, d in published.messages if "/district_leak/" in t]
    assert t == "knute/alert/district_leak/sentrum" and doc["state"] == "open"
    assert doc["value"] == pytest.approx(400 - 3.4)
    assert doc["evidence"][0]["loss_l"] == 380 and doc["evidence"][0]["measured"] == 1.0

"""The service raises the signals of backend/leaks.py as alerts (steady flow, burst,
backflow, district loss rise), each with its evidence, on both stores (SQLite and
PostgreSQL, the ``store_factory`` of tests/backend/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.config import Config, District
from knute.backend.service import Backend
from tests.backend.conftest import StoreFactory
from tests.backend.factory import HOUR_S, T0, reading, topic

HOUSES = ("00000001", "00000002")
ROOT = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs" / "schema" / "alert.schema.json").read_text()))
INLET = "1000a001"


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, document: Mapping[str, Any]) -> None:
        ALERT_SCHEMA.validate(json.loads(json.dumps(document)))   # as it goes on the wire
        self.messages.append((topic, dict(document)))

    def on(self, alert: str) -> list[dict[str, Any]]:
        return [d for t, d in self.messages if f"/alert/{alert}/" in t]


@pytest.fixture
def backend(tmp_path: Path, store_factory: StoreFactory) -> tuple[Backend, Published]:
    config = Config(path=tmp_path / "backend.toml", store_path=tmp_path / "b.sqlite",
                    districts=(District("sentrum", (INLET,), (), HOUSES, 2),))
    published = Published()
    return Backend(config, store_factory.new(), published), published


def send(core: Backend, doc: dict[str, Any]) -> None:
    core.handle(topic(doc), json.dumps(doc).encode())


def test_steady_flow_opens_on_a_leak_and_not_on_a_busy_household(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    busy = [3.0, 8, 2, 5, 9, 4] * 5        # water in every hour, but no hour of 20 L or more
    leak = [25.0, 30, 26, 40, 90, 25] * 5
    for i in range(5):
        send(core, reading("00000001", i + 1, T0 + (i + 1) * 6 * HOUR_S,
                           busy[6 * i:6 * i + 6], sum(busy[:6 * i + 6])))
        send(core, reading("00000002", i + 1, T0 + (i + 1) * 6 * HOUR_S,
                           leak[6 * i:6 * i + 6], sum(leak[:6 * i + 6])))
    steady = published.on("steady_flow")
    assert [d["subject"] for d in steady] == ["00000002"]
    assert steady[0]["state"] == "open" and len(steady[0]["evidence"]) == 24
    assert min(e["litres"] for e in steady[0]["evidence"]) == 25
    # The meter's own rule (no zero hour) fires on both: why it is not the leak detector.
    assert sorted(d["subject"] for d in published.on("continuous_flow")) == list(HOUSES)


def test_a_burst_hour_opens_and_two_quiet_hours_close(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    send(core, reading("00000001", 1, T0 + 6 * HOUR_S, [5, 2600, 40, 0, 0, 3], 2648))
    burst = published.on("burst")
    assert len(burst) == 2 and [d["state"] for d in burst] == ["open", "closed"]
    assert burst[0]["evidence"] == [{"hour": "2026-01-05T01:00:00Z", "litres": 2600.0,
                                     "quality": "measured"}]


def test_a_small_index_drop_is_backflow_and_a_reset_is_not(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    send(core, reading("00000001", 1, T0 + 6 * HOUR_S, [1] * 6, 50_000))
    send(core, reading("00000001", 2, T0 + 12 * HOUR_S, [0] * 6, 49_990))   # 10 L back
    assert [d["state"] for d in published.on("backflow")] == ["open"]
    assert published.on("backflow")[0]["evidence"][0]["index_after_l"] == 49_990
    send(core, reading("00000002", 1, T0 + 6 * HOUR_S, [1] * 6, 50_000))
    send(core, reading("00000002", 2, T0 + 12 * HOUR_S, [0] * 6, 12))       # a new meter
    assert [d["subject"] for d in published.on("backflow")] == ["00000001"]


def test_a_pipe_leak_raises_the_district_loss_rise_after_two_nights(
        backend: tuple[Backend, Published]) -> None:
    core, published = backend
    days = 8
    house = [3, 0, 0, 1, 0, 0, 2, 10, 20, 15, 10, 10, 12, 10, 8, 8, 10, 15, 20, 20, 15, 10, 8,
             5] * days
    index = {d: 0.0 for d in (*HOUSES, INLET)}
    for block in range(days * 4):
        first, end = block * 6, (block + 1) * 6
        hours = range(first, end)
        for n, device in enumerate(HOUSES):
            litres = [float(house[h] + n) for h in hours]
            index[device] += sum(litres)
            send(core, reading(device, block + 1, T0 + end * HOUR_S, litres, index[device]))
        # The inlet: both houses, 40 L/h lost in the pipes, 60 L/h more from day 5 on.
        inlet = [house[h] * 2 + 1 + 40.0 + (60.0 if h >= 5 * 24 else 0.0) for h in hours]
        index[INLET] += sum(inlet)
        send(core, reading(INLET, block + 1, T0 + end * HOUR_S, inlet, index[INLET]))
        core.evaluate(T0 + end * HOUR_S + 60)
    rise = published.on("district_loss_rise")
    assert [d["state"] for d in rise] == ["open"]
    # T0 is 01:00 Oslo: the leak starts at 01:00 on the 10th, the 10th's and 11th's
    # nights carry it, and the alert opens at the end of the 11th's window (03:00 UTC).
    assert rise[0]["opened_at"] == "2026-01-11T03:00:00Z"
    assert [e["rise_l_h"] for e in rise[0]["evidence"]] == [60.0, 60.0]
    assert rise[0]["evidence"][-1]["baseline_l_h"] == 40.0

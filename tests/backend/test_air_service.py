"""The air index inside the backend's core, fed the simulated episode (no broker)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.config import AirArea, Config
from knute.backend.service import Backend
from knute.backend.store_sqlite import Store
from knute.tools.sim.air_episode import episode
from tests.backend.factory import T0

STATIONS = ("00002001", "00002002", "00002003")
OFFSETS = {"00002001": 1.0, "00002002": 1.1, "00002003": 0.9}
SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schema/air_index.schema.json")
                    .read_text(encoding="utf-8"))


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def __call__(self, topic: str, document: Any) -> None:
        self.messages.append((topic, document))

    def last_by_hour(self, topic: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t, doc in self.messages:
            if t == topic:
                out[doc["hour"]] = doc
        return out


def run(tmp_path: Path, **air: Any) -> Published:
    config = Config(path=tmp_path / "b.toml", store_path=tmp_path / "b.sqlite",
                    air_areas=(AirArea("sentrum", STATIONS),))
    config = replace(config, **air)
    published = Published()
    store = Store(config.store_path)
    backend = Backend(config, store, published)
    for topic, doc in episode(STATIONS, 13, T0, stuck=("00002003",), offsets=OFFSETS):
        assert backend.handle(topic, json.dumps(doc).encode()) == "stored"
    store.close()
    return published


def test_the_episode_moves_the_area_through_every_band(tmp_path: Path) -> None:
    published = run(tmp_path)
    area = published.last_by_hour("knute/air/index/area/sentrum")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for doc in area.values():
        validator.validate(doc)
    hours = sorted(area)
    assert len(hours) == 12                     # hours 0-11 closed by the readings after
    # Hourly averaging: each hour's band is known once the hour has closed.
    assert [area[h]["level"] for h in hours] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert [area[h]["band"] for h in hours[::2]] == [
        "good", "fair", "moderate", "poor", "very_poor", "extremely_poor"]
    # The humid morning (hours 2-3, 88 % RH): the sensors saw 2.78 x the dry PM
    # (C = 1 + 0.2424 / (1/0.88 - 1) = 2.778); corrected back to fair, and provisional.
    assert area[hours[2]]["status"] == "provisional" and "humid" in area[hours[2]]["reasons"]
    assert area[hours[2]]["scales"]["eaqi"]["pollutants"]["pm2_5"]["value"] == \
        pytest.approx(10.0, abs=0.3)
    assert area[hours[0]]["status"] == "ok"


def test_a_stuck_station_is_flagged_and_dropped(tmp_path: Path) -> None:
    published = run(tmp_path)
    area = published.last_by_hour("knute/air/index/area/sentrum")
    station = published.last_by_hour("knute/air/index/station/00002003")
    hours = sorted(area)
    # Stuck from hour 4: twelve flat readings (two hours) close with hour 5.
    assert station[hours[4]]["status"] != "withheld"
    for h in hours[5:]:
        assert station[h]["status"] == "withheld" and station[h]["reasons"] == ["stuck"]
        assert area[h]["stations"] == ["00002001", "00002002"]
        assert area[h]["dropped"] == [{"station": "00002003", "reasons": ["stuck"]}]
        assert "station_dropped" in area[h]["reasons"]
    assert area[hours[4]]["stations"] == list(STATIONS)


def test_24h_averaging_delays_the_bands(tmp_path: Path) -> None:
    published = run(tmp_path, air_pm_averaging="24h")
    area = published.last_by_hour("knute/air/index/area/sentrum")
    levels = [area[h]["level"] for h in sorted(area)]
    # The area's running mean of PM2.5 after hour k (dry values): the median station
    # (offset 1.0) while all three count, then the upper median of the two left when
    # the stuck one is dropped (from hour 5: offset 1.1).
    # h2 (3+3+10)/3 = 5.33 fair; h4 56/5 = 11.2 fair; h5 1.1 x 86/6 = 15.77 moderate;
    # h9 1.1 x 446/10 = 49.06 moderate; h10 1.1 x 646/11 = 64.6 poor; h11 1.1 x 70.5 poor.
    assert levels == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4]
    # Hourly averaging had reached extremely poor (6) by hour 10: the mean lags.
    assert all(area[h]["scales"]["eaqi"]["pollutants"]["pm2_5"]["averaging"] == "24h"
               for h in area)
    assert all("short_window" in area[h]["reasons"] for h in area)   # under 18 hours


def test_norwegian_scale_first(tmp_path: Path) -> None:
    published = run(tmp_path, air_scale="no")
    area = published.last_by_hour("knute/air/index/area/sentrum")
    # Norway's PM2.5 classes: <=30 low, <=50 moderate, <=150 high, above very high.
    assert [area[h]["band"] for h in sorted(area)[::2]] == [
        "low", "low", "low", "high", "high", "very_high"]
    assert all(doc["scale"] == "no" for doc in area.values())


def test_a_failing_index_never_loses_the_reading(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(path=tmp_path / "b.toml", store_path=tmp_path / "b.sqlite")
    store = Store(config.store_path)
    backend = Backend(config, store, Published())

    def broken(doc: Any) -> None:
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(backend.air, "handle", broken)
    topic, doc = next(episode(STATIONS, 1, T0))
    assert backend.handle(topic, json.dumps(doc).encode()) == "stored"
    assert store.count_readings() == 1 and store.counters()["air_errors"] == 1
    store.close()


def test_a_restarted_backend_closes_each_hour_once(tmp_path: Path) -> None:
    config = Config(path=tmp_path / "b.toml", store_path=tmp_path / "b.sqlite")
    readings = list(episode(("00002001",), 3, T0))          # 6 a hour, 18 in all
    store = Store(config.store_path)
    first = Published()
    backend = Backend(config, store, first)
    for topic, doc in readings[:8]:                          # hour 0 and two of hour 1
        backend.handle(topic, json.dumps(doc).encode())
    assert [d["hour"] for _, d in first.messages] == ["2026-01-05T01:00:00Z"]
    again = Published()
    restarted = Backend(config, store, again)               # same store, new process
    for topic, doc in readings[8:12]:                        # the rest of hour 1
        restarted.handle(topic, json.dumps(doc).encode())
    assert again.messages == []                              # hour 0 was closed already
    topic, doc = readings[12]                                # the first of hour 2
    restarted.handle(topic, json.dumps(doc).encode())
    assert [d["hour"] for _, d in again.messages] == ["2026-01-05T02:00:00Z"]
    store.close()

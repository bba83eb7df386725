"""``/air`` and ``/api/air`` of the backend's web app, on a store fed the episode."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path

from knute.backend.config import AirArea, Config
from knute.backend.service import Backend
from knute.backend.store_sqlite import Store
from knute.backend.web import WebApp
from knute.tools.sim.air_episode import episode
from tests.backend.factory import HOUR_S, T0
from tests.backend.test_air_service import OFFSETS, STATIONS, Published


def fed(tmp_path: Path, hours: int = 13) -> WebApp:
    config = Config(path=tmp_path / "b.toml", store_path=tmp_path / "b.sqlite",
                    air_areas=(AirArea("sentrum", STATIONS),))
    store = Store(config.store_path)
    backend = Backend(config, store, Published())
    for topic, doc in episode(STATIONS, hours, T0, stuck=("00002003",), offsets=OFFSETS):
        backend.handle(topic, json.dumps(doc).encode())
    return WebApp(config, Store(config.store_path), clock=lambda: T0 + hours * HOUR_S)


def test_api_air_shows_the_last_closed_hour(tmp_path: Path) -> None:
    status, kind, body = fed(tmp_path).answer("/api/air")
    assert status == HTTPStatus.OK and kind == "application/json"
    doc = json.loads(body)
    stations = {d["subject"]: d for d in doc["stations"]}
    assert stations["00002001"]["band"] == "extremely_poor"
    assert stations["00002003"]["status"] == "withheld"
    assert [a["band"] for a in doc["areas"]] == ["extremely_poor"]


def test_api_air_station_has_48_hours(tmp_path: Path) -> None:
    app = fed(tmp_path)
    status, _, body = app.answer("/api/air/00002001")
    doc = json.loads(body)
    assert status == HTTPStatus.OK and len(doc["hours"]) == 48
    known = [h for h in doc["hours"] if h["level"] is not None]
    assert [h["level"] for h in known] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert known[-1]["colour"] == "#7d2181"
    assert app.answer("/api/air/0000ffff")[0] == HTTPStatus.NOT_FOUND
    assert app.answer("/api/air/nothex")[0] == HTTPStatus.BAD_REQUEST


def test_air_page_lists_stations_in_their_colours(tmp_path: Path) -> None:
    status, kind, body = fed(tmp_path).answer("/air")
    html = body.decode()
    assert status == HTTPStatus.OK and kind.startswith("text/html")
    assert 'data-subject="00002001"' in html and 'data-colour="#7d2181"' in html
    assert 'data-subject="00002003" data-level="" data-band="" data-colour="#b6bec8"' in html
    assert html.count('class="air-chart"') == 3

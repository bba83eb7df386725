"""The air index end to end on real processes: Mosquitto, ``knute backend run``, Chromium.

The simulated episode (tools/sim/air_episode.py: PM2.5 through every EEA
band, a humid morning, one station stuck from hour 4) is published over
Mosquitto as a gateway publishes readings. The backend must move the
retained area index through the bands hour by hour, flag the stuck station
and drop it from the area, announce the devices to Home Assistant, publish
SenML, upload to a local stand-in for Sensor.Community's API, and serve a
page on which Chromium draws every station in its band colour.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.air_index import EAQI
from knute.tools.rig.broker import Broker, free_port
from knute.tools.rig.browser import Chromium
from knute.tools.rig.png import colours
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from knute.tools.sim.air_episode import episode
from tests.backend.test_backend_process import Backend
from tests.backend.test_open_data import UPLOADS, upload_server
from tests.backend.test_web_browser import Dom

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/air_index.schema.json").read_text(encoding="utf-8")))
STATIONS = ("00002001", "00002002", "00002003")
OFFSETS = {"00002001": 1.0, "00002002": 1.1, "00002003": 0.9}
T0 = 1_767_571_200          # 2026-01-05 00:00 UTC
AREA = "knute/air/index/area/sentrum"

__all__ = ["upload_server"]      # the fixture, from the uploader's own tests


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    return Chromium(tmp_path / "chromium")


@pytest.fixture
def broker(mqtt_broker_factory: Callable[..., Broker]) -> Broker:
    return mqtt_broker_factory("mosquitto")


def write_config(tmp_path: Path, broker: Broker, web_port: int, upload_port: int,
                 pm_averaging: str = "1h") -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "backend-air"
[store]
path = "backend.sqlite"
[water]
evaluate_every_s = 0.5
[web]
host = "127.0.0.1"
port = {web_port}
[air]
scale = "eaqi"
pm_averaging = "{pm_averaging}"
[[air_area]]
name = "sentrum"
stations = {json.dumps(list(STATIONS))}
[open_data]
home_assistant_prefix = "homeassistant"
senml = true
sensor_community_url = "http://127.0.0.1:{upload_port}/v1/push-sensor-data/"
""", encoding="utf-8")
    return path


def test_the_episode_end_to_end(tmp_path: Path, broker: Broker, knute_bin: Path,
                                chromium: Chromium,
                                upload_server: ThreadingHTTPServer) -> None:
    web_port = free_port()
    config = write_config(tmp_path, broker, web_port, upload_server.server_address[1])
    backend = Backend(knute_bin, config)
    watch = Subscriber(broker.host, broker.port, ["knute/air/#", "knute/senml/#",
                                                  "homeassistant/#"])
    sent = list(episode(STATIONS, 13, T0, stuck=("00002003",), offsets=OFFSETS))
    try:
        assert watch.client is not None
        for topic, doc in sent:
            watch.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(timeout=10)
        # The last readings (hour 12) close hour 11 of all three stations.
        last_hour = "2026-01-05T12:00:00Z"
        wait_for(lambda: [d for d in watch.docs(topic=AREA)
                          if d["hour"] == last_hour and len(d["dropped"]) == 1
                          and len(d["stations"]) == 2], 120,
                 "the area index of the episode's last hour")
        by_hour: dict[str, dict[str, Any]] = {}
        for doc in watch.docs(topic=AREA):
            SCHEMA.validate(doc)
            by_hour[doc["hour"]] = doc              # the last word on each hour
        hours = sorted(by_hour)
        assert len(hours) == 12
        assert [by_hour[h]["band"] for h in hours] == [
            "good", "good", "fair", "fair", "moderate", "moderate", "poor", "poor",
            "very_poor", "very_poor", "extremely_poor", "extremely_poor"]
        # An hour's index appears only once the hour is over: the first reading of
        # 01:00 closes 00:00-01:00, published as "hour": "...T01:00:00Z".
        assert hours[0] == "2026-01-05T01:00:00Z"
        humid = by_hour["2026-01-05T03:00:00Z"]
        assert humid["status"] == "provisional" and "humid" in humid["reasons"]
        assert humid["band"] == "fair"              # corrected, not the 2.8 x the sensor saw
        stuck = watch.docs(topic="knute/air/index/station/00002003")[-1]
        assert stuck["status"] == "withheld" and stuck["reasons"] == ["stuck"]
        assert by_hour[last_hour]["dropped"] == [{"station": "00002003", "reasons": ["stuck"]}]

        # Retained: a newcomer gets the area's latest index at once.
        late = Subscriber(broker.host, broker.port, AREA)
        try:
            [first] = late.wait_count(1)
            assert first.retain and first.doc()["band"] == "extremely_poor"
        finally:
            late.close()

        # Home Assistant discovery, SenML, Sensor.Community.
        discovery = {m.topic: m.doc() for m in watch.messages() if m.topic.endswith("/config")}
        pm = discovery["homeassistant/sensor/knute_00002001/pm2_5/config"]
        assert pm["device_class"] == "pm25" and pm["unit_of_measurement"] == "µg/m³"
        assert pm["state_topic"] == "knute/air_quality/00002001/up"
        senml = watch.docs(topic="knute/senml/air_quality/00002001")
        assert senml and senml[-1][0]["bn"] == "knute:00002001:"
        wait_for(lambda: len(UPLOADS) >= 2 * len(sent), 60,
                 "one PM and one climate upload per reading")
        # The first reading (00002001: PM2.5 2.7, PM10 5.4, 2.5 °C, 55 %, 1009 hPa), as
        # Sensor.Community's firmware sends it: pin 1 the PM sensor, pin 11 the BME280.
        (path, pm_headers, pm_body), (_, climate_headers, climate_body) = UPLOADS[:2]
        assert path == "/v1/push-sensor-data/"
        assert (pm_headers["x-pin"], pm_headers["x-sensor"]) == ("1", "knute-00002001")
        assert pm_headers["content-type"] == "application/json"
        assert pm_body["sensordatavalues"] == [{"value_type": "P1", "value": "5.40"},
                                               {"value_type": "P2", "value": "2.70"}]
        assert climate_headers["x-pin"] == "11"
        assert climate_body["sensordatavalues"] == [
            {"value_type": "temperature", "value": "2.50"},
            {"value_type": "humidity", "value": "55.00"},
            {"value_type": "pressure", "value": "100900.00"}]

        # The page, as Chromium builds and draws it.
        url = f"http://127.0.0.1:{web_port}/air"
        dom = Dom(chromium.dump_dom(url))
        cards = {a["data-subject"]: a for a in dom.find("li")
                 if "air-station" in a.get("class", "")}
        assert cards["00002001"]["data-colour"] == EAQI.colours[5]
        assert cards["00002002"]["data-colour"] == EAQI.colours[5]
        assert cards["00002003"]["data-status"] == "withheld"
        [area] = [a for t, a in dom.elements if t == "li" and "air-area" in a.get("class", "")]
        assert area["data-band"] == "extremely_poor"
        shot = chromium.screenshot(url, tmp_path / "air.png", 800, 900)
        drawn = colours(shot)
        # The swatches are 56 x 56 px: each station's colour fills at least that much.
        assert drawn[EAQI.colours[5]] >= 2 * 56 * 56, drawn.most_common(8)
        assert drawn["#b6bec8"] >= 56 * 56, drawn.most_common(8)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/air/00002001",
                                    timeout=30) as response:
            chart = json.loads(response.read())
        assert [h["band"] for h in chart["hours"] if h["band"]][-2:] == [
            "extremely_poor", "extremely_poor"]
    finally:
        watch.close()
        assert backend.stop() == 0


def test_24h_averaging_lags_on_real_processes(tmp_path: Path, broker: Broker,
                                              knute_bin: Path,
                                              upload_server: ThreadingHTTPServer) -> None:
    """The same episode with PM as a 24-hour running mean: the bands follow late."""
    config = write_config(tmp_path, broker, 0, upload_server.server_address[1], "24h")
    backend = Backend(knute_bin, config)
    watch = Subscriber(broker.host, broker.port, AREA)
    try:
        assert watch.client is not None
        for topic, doc in episode(STATIONS, 13, T0, stuck=("00002003",), offsets=OFFSETS):
            watch.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(timeout=10)
        last_hour = "2026-01-05T12:00:00Z"
        wait_for(lambda: [d for d in watch.docs(topic=AREA)
                          if d["hour"] == last_hour and len(d["stations"]) == 2], 120,
                 "the area index of the episode's last hour")
        by_hour = {d["hour"]: d for d in watch.docs(topic=AREA)}
        # tests/backend/test_air_service.py works these out by hand: hourly averaging
        # reaches 6 (extremely poor) by the 11th hour, the 24-hour mean only 4 (poor).
        assert [by_hour[h]["level"] for h in sorted(by_hour)] == [
            1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4]
        assert all(d["scales"]["eaqi"]["pollutants"]["pm2_5"]["averaging"] == "24h"
                   for d in by_hour.values())
    finally:
        watch.close()
        assert backend.stop() == 0

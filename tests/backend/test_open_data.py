"""Open data: Home Assistant discovery against HA's documented schema, SenML (RFC 8428),
Sensor.Community's request format against a local server."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.open_data import (
    SensorCommunityUploader,
    ha_discovery,
    senml,
    sensor_community_requests,
)
from knute.tools.rig.wait import wait_for
from knute.tools.sim.air_episode import reading as air_reading
from tests.backend.factory import T0, reading

# Home Assistant, MQTT sensor (home-assistant.io/integrations/sensor.mqtt/) and the units
# each sensor device class accepts (home-assistant.io/integrations/sensor/#device-class):
# the keys used here, written from those pages (unknown keys are refused by HA's schema).
HA_UNITS = {
    "pm1": ["µg/m³"], "pm25": ["µg/m³"], "pm10": ["µg/m³"], "nitrogen_dioxide": ["µg/m³"],
    "temperature": ["°C", "°F", "K"], "humidity": ["%"],
    "atmospheric_pressure": ["cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"],
    "water": ["L", "gal", "m³", "ft³", "CCF"], "battery": ["%"],
}
HA_SENSOR = {
    "type": "object",
    "required": ["name", "unique_id", "state_topic", "device"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"}, "unique_id": {"type": "string"},
        "state_topic": {"type": "string", "pattern": "^[^#+]+$"},
        "json_attributes_topic": {"type": "string", "pattern": "^[^#+]+$"},
        "value_template": {"type": "string"},
        "device_class": {"enum": [*HA_UNITS, "aqi"]},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "unit_of_measurement": {"type": "string"},
        "device": {
            "type": "object", "required": ["identifiers"], "additionalProperties": False,
            "properties": {"identifiers": {"type": "array", "items": {"type": "string"},
                                           "minItems": 1},
                           "name": {"type": "string"}, "manufacturer": {"type": "string"},
                           "model": {"type": "string"}}},
    },
    # The device classes with units, and aqi without one.
    "allOf": [{"if": {"properties": {"device_class": {"const": dc}},
                      "required": ["device_class"]},
               "then": {"required": ["unit_of_measurement"],
                        "properties": {"unit_of_measurement": {"enum": units}}}}
              for dc, units in HA_UNITS.items()]
    + [{"if": {"properties": {"device_class": {"const": "aqi"}}, "required": ["device_class"]},
        "then": {"not": {"required": ["unit_of_measurement"]}}},
       {"if": {"properties": {"device_class": {"const": "water"}},
               "required": ["device_class"]},
        "then": {"properties": {"state_class": {"enum": ["total", "total_increasing"]}}}}],
}
# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config
HA_TOPIC = re.compile(r"^homeassistant/sensor/([A-Za-z0-9_-]+/)?[A-Za-z0-9_-]+/config$")
AIR = air_reading("00002001", 7, T0 + 1.5, 8.7, 14.3, 64.0)


def test_air_discovery_follows_home_assistants_schema() -> None:
    validator = jsonschema.Draft202012Validator(HA_SENSOR)
    configs = dict(ha_discovery(AIR, "knute", "homeassistant"))
    assert all(HA_TOPIC.match(t) for t in configs)
    for config in configs.values():
        validator.validate(config)
    assert set(configs) == {f"homeassistant/sensor/knute_00002001/{n}/config" for n in (
        "pm2_5", "pm10", "temperature", "humidity", "pressure", "air_index")}
    pm = configs["homeassistant/sensor/knute_00002001/pm2_5/config"]
    assert pm["value_template"] == "{{ value_json.readings.pm2_5.value }}"
    index = configs["homeassistant/sensor/knute_00002001/air_index/config"]
    assert index["state_topic"] == "knute/air/index/station/00002001"
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)


def test_water_discovery_follows_home_assistants_schema() -> None:
    validator = jsonschema.Draft202012Validator(HA_SENSOR)
    configs = dict(ha_discovery(reading("00003456", 1, T0, [1.0], 8812.0), "knute",
                                "homeassistant"))
    for config in configs.values():
        validator.validate(config)
    water = configs["homeassistant/sensor/knute_00003456/index/config"]
    assert (water["device_class"], water["unit_of_measurement"], water["state_class"]) == (
        "water", "L", "total_increasing")
    assert configs["homeassistant/sensor/knute_00003456/battery/config"]["device_class"] \
        == "battery"


def test_the_schema_check_catches_a_wrong_unit() -> None:
    validator = jsonschema.Draft202012Validator(HA_SENSOR)
    config = dict(ha_discovery(AIR, "knute", "homeassistant"))[
        "homeassistant/sensor/knute_00002001/pressure/config"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**config, "unit_of_measurement": "hpa"})


# RFC 8428: names from A-Z a-z 0-9 - : . / _, starting with a letter or digit
# (section 4.5.1); units from the SenML Units registry (section 12.1).
SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:./_-]*$")
SENML_UNITS = {"kg/m3", "Cel", "%RH", "Pa", "m3", "%EL"}
SENML_FIELDS = {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s",
                "t", "ut"}


def test_senml_pack_by_hand() -> None:
    pack = senml(AIR)
    assert all(set(r) <= SENML_FIELDS for r in pack)
    assert pack[0]["bn"] == "knute:00002001:" and pack[0]["bt"] == pytest.approx(T0 + 1.5)
    assert all(SENML_NAME.match(pack[0]["bn"] + r["n"]) for r in pack)
    assert {r["u"] for r in pack} <= SENML_UNITS
    values = {r["n"]: (r["u"], r["v"]) for r in pack}
    assert values["pm2_5"] == ("kg/m3", pytest.approx(8.7e-9))
    assert values["pressure"] == ("Pa", pytest.approx(100900.0))   # 1009 hPa
    assert values["temperature"] == ("Cel", 2.5)
    assert values["humidity"] == ("%RH", 64.0)
    water = senml(reading("00003456", 1, T0, [1.0], 8812.0))
    assert [(r["n"], r["u"], r["v"]) for r in water] == [
        ("index", "m3", pytest.approx(8.812)), ("battery", "%EL", 80)]
    json.dumps(pack)                                 # a JSON array, as RFC 8428 section 5


def test_sensor_community_requests_by_hand() -> None:
    [(pm_headers, pm), (climate_headers, climate)] = sensor_community_requests(AIR, "knute-1")
    assert pm_headers == {"Content-Type": "application/json", "X-Pin": "1",
                          "X-Sensor": "knute-1"}
    assert pm["sensordatavalues"] == [{"value_type": "P1", "value": "14.30"},
                                      {"value_type": "P2", "value": "8.70"}]
    assert climate_headers["X-Pin"] == "11"
    assert [v["value_type"] for v in climate["sensordatavalues"]] == [
        "temperature", "humidity", "pressure"]
    warm = air_reading("00002001", 8, T0, 8.7, 14.3, 64.0, alarms=("warmup",))
    assert [h["X-Pin"] for h, _ in sensor_community_requests(warm, "x")] == ["11"]
    assert sensor_community_requests(reading("00003456", 1, T0, [1.0], 1.0), "x") == []


UPLOADS: list[tuple[str, dict[str, str], Any]] = []


class Recorder(BaseHTTPRequestHandler):
    """Sensor.Community's push endpoint as a local server that keeps every request
    (path, headers with lower-case names, JSON body) in UPLOADS."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}   # names: any case
        UPLOADS.append((self.path, headers, json.loads(body)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upload_server() -> Iterator[ThreadingHTTPServer]:
    UPLOADS.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_uploader_posts_to_a_local_server(upload_server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{upload_server.server_address[1]}/v1/push-sensor-data/"
    uploader = SensorCommunityUploader(url, "knute-")
    uploader.submit(AIR)
    wait_for(lambda: len(UPLOADS) == 2, 30, "two uploads")
    uploader.close()
    _, headers, body = UPLOADS[0]
    assert headers["x-pin"] == "1" and headers["x-sensor"] == "knute-00002001"
    assert body["software_version"] == "knute-backend"
    assert uploader.counts == {"sent": 2, "failed": 0, "dropped": 0}


def test_an_absent_server_is_counted_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # closed again: nothing listens there
    uploader = SensorCommunityUploader(f"http://127.0.0.1:{port}/", "knute-", timeout_s=5)
    uploader.submit(AIR)
    wait_for(lambda: uploader.counts["failed"] == 2, 30, "two failed uploads")
    uploader.close()

"""Optional outputs for neighbours: Sensor.Community uploads, Home Assistant discovery, SenML.

All three are off unless ``[open_data]`` turns them on (docs/air.md, "Open data"):

- ``sensor_community_url``: each air reading is sent to Sensor.Community's
  push API as their firmware sends it: one POST per sensor with ``X-Pin``
  (1: the PM sensor, ``P1`` = PM10, ``P2`` = PM2.5; 11: the BME280,
  ``temperature``, ``humidity``, ``pressure`` in Pa) and ``X-Sensor`` (the
  station's registered id). Values the node flagged (warm-up, faults, out
  of range) are not sent. Uploads run on their own thread from a bounded
  queue, so a slow or absent server never holds up the consumer.
- ``home_assistant_prefix``: the first reading of each device in a process
  publishes retained MQTT discovery configs (``<ha>/sensor/<node>/<name>/config``)
  for each of its readings, its battery and, for air stations, its index,
  with Home Assistant's device classes and units; the state topics are
  knute's own, read with ``value_template``.
- ``senml``: each reading again on ``<prefix>/senml/<kind>/<device>`` as a
  SenML pack (RFC 8428, JSON), in SenML's registered units.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from knute.backend.air_qc import check, from_doc
from knute.backend.config import Config
from knute.backend.hours import parse_utc

Publish = Callable[[str, Any], None]         # topic, JSON document (object or array)
SOFTWARE = "knute-backend"
QUEUE_MAX = 1000

# Home Assistant sensor device classes and the units they take
# (home-assistant.io/integrations/sensor/#device-class), per knute reading name.
HA_SENSORS: dict[str, tuple[str | None, str | None, str]] = {
    # name: (device_class, unit_of_measurement, state_class)
    "pm1": ("pm1", "µg/m³", "measurement"),
    "pm2_5": ("pm25", "µg/m³", "measurement"),
    "pm10": ("pm10", "µg/m³", "measurement"),
    "no2": ("nitrogen_dioxide", "µg/m³", "measurement"),
    "temperature": ("temperature", "°C", "measurement"),
    "humidity": ("humidity", "%", "measurement"),
    "pressure": ("atmospheric_pressure", "hPa", "measurement"),
    "index": ("water", "L", "total_increasing"),
    "battery": ("battery", "%", "measurement"),
}
HA_NAMES = {"pm1": "PM1", "pm2_5": "PM2.5", "pm10": "PM10", "no2": "NO2",
            "temperature": "Temperature", "humidity": "Humidity", "pressure": "Pressure",
            "index": "Water index", "battery": "Battery", "air_index": "Air quality index"}

# SenML units (RFC 8428 section 12.1) and the factor from knute's unit to them.
SENML_UNITS: dict[str, tuple[str, float]] = {
    "µg/m³": ("kg/m3", 1e-9), "°C": ("Cel", 1.0), "%": ("%RH", 1.0), "hPa": ("Pa", 100.0),
    "L": ("m3", 1e-3), "Pa": ("Pa", 1.0),
}


def log(message: str) -> None:
    """One line on stderr."""
    print(f"knute backend: {message}", file=sys.stderr, flush=True)


# -- Sensor.Community -----------------------------------------------------------

def sensor_community_requests(doc: Mapping[str, Any], sensor_id: str
                              ) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(headers, JSON body) of each POST for one air reading; [] if nothing is usable."""
    if doc.get("kind") != "air_quality":
        return []
    checked = check(from_doc(doc, 0.0))
    readings = doc.get("readings", {})
    raw = {name: readings[name]["value"] for name in ("pm2_5", "pm10")
           if name in checked.values}
    out = []
    pm = [{"value_type": vt, "value": f"{raw[name]:.2f}"}
          for vt, name in (("P1", "pm10"), ("P2", "pm2_5")) if name in raw]
    if pm:
        out.append((_headers(sensor_id, 1), {"software_version": SOFTWARE,
                                             "sensordatavalues": pm}))
    climate = []
    if "climate_fault" not in doc.get("alarms", []):
        for name, factor in (("temperature", 1.0), ("humidity", 1.0), ("pressure", 100.0)):
            value = readings.get(name, {}).get("value")
            if isinstance(value, int | float):
                climate.append({"value_type": name, "value": f"{value * factor:.2f}"})
    if climate:
        out.append((_headers(sensor_id, 11), {"software_version": SOFTWARE,
                                              "sensordatavalues": climate}))
    return out


def _headers(sensor_id: str, pin: int) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Pin": str(pin), "X-Sensor": sensor_id}


class SensorCommunityUploader:
    """Posts readings to Sensor.Community from a thread; counts what happened."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.queue: queue.Queue[tuple[dict[str, str], bytes] | None] = queue.Queue(QUEUE_MAX)
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        self.thread = threading.Thread(target=self._run, name="sensor-community", daemon=True)
        self.thread.start()

    def submit(self, doc: Mapping[str, Any]) -> None:
        """Queue the uploads of one reading (dropped and counted when the queue is full)."""
        for headers, body in sensor_community_requests(doc, self.prefix + str(doc["device"])):
            try:
                self.queue.put_nowait((headers, json.dumps(body).encode()))
            except queue.Full:
                self.counts["dropped"] += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop the thread."""
        self.queue.put(None)
        self.thread.join(timeout_s)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            headers, body = item
            request = urllib.request.Request(self.url, data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.counts["sent"] += 1
            except (urllib.error.URLError, OSError) as exc:
                self.counts["failed"] += 1
                log(f"sensor.community upload for {headers['X-Sensor']} failed: {exc}")


# -- Home Assistant MQTT discovery ------------------------------------------------

def ha_discovery(doc: Mapping[str, Any], prefix: str, ha_prefix: str
                 ) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) of every discovery message for the device of ``doc``."""
    device, kind = str(doc["device"]), str(doc["kind"])
    node = f"knute_{device}"
    ha_device = {"identifiers": [node], "name": f"knute {kind} {device}",
                 "manufacturer": "knute", "model": kind}
    state_topic = f"{prefix}/{kind}/{device}/up"
    names = [n for n in doc.get("readings", {}) if n in HA_SENSORS]
    out = []
    for name in names:
        out.append(_ha_sensor(ha_prefix, node, name, state_topic,
                              f"{{{{ value_json.readings.{name}.value }}}}", ha_device))
    if doc.get("battery") is not None:
        out.append(_ha_sensor(ha_prefix, node, "battery", state_topic,
                              "{{ value_json.battery }}", ha_device))
    if kind == "air_quality":
        topic = f"{ha_prefix}/sensor/{node}/air_index/config"
        out.append((topic, {
            "name": HA_NAMES["air_index"], "unique_id": f"{node}_air_index",
            "state_topic": f"{prefix}/air/index/station/{device}",
            "value_template": "{{ value_json.level }}", "device_class": "aqi",
            "state_class": "measurement",
            "json_attributes_topic": f"{prefix}/air/index/station/{device}",
            "device": ha_device}))
    return out


def _ha_sensor(ha_prefix: str, node: str, name: str, state_topic: str, template: str,
               ha_device: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    device_class, unit, state_class = HA_SENSORS[name]
    config: dict[str, Any] = {
        "name": HA_NAMES[name], "unique_id": f"{node}_{name}", "state_topic": state_topic,
        "value_template": template, "state_class": state_class, "device": ha_device}
    if device_class:
        config["device_class"] = device_class
    if unit:
        config["unit_of_measurement"] = unit
    return f"{ha_prefix}/sensor/{node}/{name}/config", config


# -- SenML ---------------------------------------------------------------------------

def senml(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The SenML pack (RFC 8428) of one reading: base name and time, one record a value."""
    records: list[dict[str, Any]] = []
    for name, reading in sorted(doc.get("readings", {}).items()):
        value = reading.get("value")
        if not isinstance(value, int | float) or reading.get("unit") not in SENML_UNITS:
            continue
        unit, factor = SENML_UNITS[reading["unit"]]
        if name == "humidity":
            unit = "%RH"
        elif reading["unit"] == "%":
            unit = "%"
        records.append({"n": name, "u": unit, "v": value * factor})
    if doc.get("battery") is not None:
        records.append({"n": "battery", "u": "%EL", "v": doc["battery"]})
    if not records:
        return []
    records[0] = {"bn": f"knute:{doc['device']}:", "bt": parse_utc(doc["received_at"]),
                  **records[0]}
    return records


class OpenData:
    """The open-data outputs of ``[open_data]`` for each stored reading."""

    def __init__(self, config: Config, publish: Publish) -> None:
        self.config = config
        self.publish = publish
        self.announced: set[str] = set()
        self.uploader = (SensorCommunityUploader(config.open_data_sensor_community_url,
                                                 config.open_data_sensor_community_prefix)
                         if config.open_data_sensor_community_url else None)

    def handle(self, doc: Mapping[str, Any]) -> None:
        """Announce the device to Home Assistant once, publish SenML, queue the upload."""
        ha = self.config.open_data_home_assistant_prefix
        if ha and doc["device"] not in self.announced:
            self.announced.add(str(doc["device"]))
            for topic, config in ha_discovery(doc, self.config.prefix, ha):
                self.publish(topic, config)
        if self.config.open_data_senml:
            pack = senml(doc)
            if pack:
                self.publish(f"{self.config.prefix}/senml/{doc['kind']}/{doc['device']}", pack)
        if self.uploader is not None:
            self.uploader.submit(doc)

    def close(self) -> None:
        """Send the uploads still queued (a few seconds at most) and stop the uploader."""
        if self.uploader is not None:
            self.uploader.close()
            log("sensor.community uploads: " + json.dumps(self.uploader.counts, sort_keys=True))

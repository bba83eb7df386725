"""``[air]``, ``[[air_area]]`` and ``[open_data]`` of the backend's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.backend.config import AirArea, load
from tests.backend.test_config import refused, write


def test_air_settings_load(tmp_path: Path) -> None:
    config = load(write(tmp_path, """
[air]
scale = "no"
pm_averaging = "24h"
kappa = 0.3
stuck_readings = 6
[[air_area]]
name = "sentrum"
stations = ["00002001", "00002002"]
[open_data]
home_assistant_prefix = "homeassistant"
senml = true
sensor_community_url = "https://api.sensor.community/v1/push-sensor-data/"
"""))
    assert (config.air_scale, config.air_pm_averaging, config.air_kappa) == ("no", "24h", 0.3)
    assert config.air_stuck_readings == 6 and config.air_rh_from == 70.0
    assert config.air_areas == (AirArea("sentrum", ("00002001", "00002002")),)
    assert config.open_data_senml and config.open_data_home_assistant_prefix == "homeassistant"


@pytest.mark.parametrize("text,message", [
    ('[air]\nscale = "us"', 'air.scale: expected "eaqi" or "no", got \'us\''),
    ('[air]\npm_averaging = "8h"', "air.pm_averaging: expected"),
    ("[air]\nrh_from = 96.0", "air.rh_from and air.rh_fog"),
    ("[air]\nkappa = -1.0", "air.kappa: must not be negative"),
    ("[air]\nmin_readings = 0", "air.min_readings: must be at least 1"),
    ("[air]\nwhat = 1", "unknown key air.what"),
    ('[[air_area]]\nname = "Sentrum"\nstations = ["00002001"]', "air_area[0].name"),
    ('[[air_area]]\nname = "a"\nstations = []', "air_area[0].stations: an area needs"),
    ('[[air_area]]\nname = "a"\nstations = ["2001"]', "air_area[0].stations: '2001'"),
    ('[[air_area]]\nname = "a"\nstations = ["00002001"]\n[[air_area]]\nname = "a"\n'
     'stations = ["00002002"]', "air area 'a' is defined twice"),
    ('[open_data]\nsensor_community_url = "ftp://x"', "open_data.sensor_community_url"),
    ("[open_data]\nsenml = 1", "open_data.senml: expected bool"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in refused(tmp_path, text)

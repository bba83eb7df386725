"""The backend's configuration: defaults, and one line naming file and key on errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.backend.config import ConfigError, load

GOOD = """
[mqtt]
host = "broker.example"
port = 8883
share_group = "backend"
[store]
path = "data/b.sqlite"
[water]
timezone = "Europe/Oslo"
night_flow_l_h = 15
[[district]]
name = "sentrum"
inflow = ["1000a001"]
households = ["00000001", "00000002"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    """The error ``load`` gives for a file of ``text``: one line, the file's name first."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_a_good_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.subscription == "$share/backend/knute/+/+/up"
    assert config.store_path == tmp_path / "data" / "b.sqlite"
    assert config.night_flow_l_h == 15.0 and config.protocol == "5"
    [district] = config.districts
    assert district.properties == 2 and district.outflow == ()


def test_defaults_subscribe_without_a_group(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""))
    assert config.subscription == "knute/+/+/up"
    assert config.client_id == "knute-backend"


@pytest.mark.parametrize(("text", "message"), [
    ("[mqtt]\nport = \"x\"\n", "mqtt.port: expected int"),
    ("[mqtt]\nprot = \"5\"\n", "unknown key mqtt.prot"),
    ("[mqtt]\nprotocol = \"4\"\n", "mqtt.protocol: expected"),
    ("[water]\ntimezone = \"Mars/Olympus\"\n", "water.timezone: unknown time zone"),
    ("[water]\nnight_flow_l_h = -1\n", "water.night_flow_l_h: must not be negative"),
    ("[[district]]\nname = \"a\"\ninflow = [\"XYZ\"]\n", "district[0].inflow: 'XYZ' is not"),
    ("[[district]]\nname = \"a\"\n", "district[0].inflow: a district needs"),
    ("[other]\n", "unknown section [other]"),
    ("[mqtt\n", "not valid TOML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in refused(tmp_path, text)


def test_the_example_in_water_md_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "water.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load(write(tmp_path, example))
    assert config.districts[0].households == ("00001234", "00001235")
    assert config.night_use_l_per_property_h == 1.7

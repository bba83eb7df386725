"""Register maps: the shipped templates load, and every mistake names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.gateway.modbus.regmap import (
    SHIPPED_MAPS,
    MapError,
    load_map,
    resolve_map_path,
    shipped_maps,
)
from knute.gateway.modbus.settings import parse_settings
from knute.protocol import kinds

GOOD = """\
[device]
model = "test meter"
kind = "water_meter"

[registers.index]
function = 3
address = 0
type = "u32"
unit = "m3"
scale = 0.001

[registers.status]
function = 3
address = 2
type = "u16"
field = "alarms"
bits = { 0 = "leak" }

[fixed]
battery = 100

[profile]
from = "index"
"""


def _line(text: str, needle: str, after: str = "") -> int:
    """1-based line of the first ``needle`` at or after the line holding ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "meter.toml"
    path.write_text(text)
    return str(path)


def test_shipped_maps_load() -> None:
    names = shipped_maps()
    assert names == ["bulk_water_meter", "generic_air_station", "generic_water_meter"]
    water = load_map(resolve_map_path("generic_water_meter"))
    air = load_map(resolve_map_path("generic_air_station"))
    assert (water.kind, air.kind) == ("water_meter", "air_quality")
    assert [(b.function, b.address, b.count) for b in water.reads()] == [(3, 0, 8)]
    assert [(b.function, b.address, b.count) for b in air.reads()] == [(3, 100, 1), (4, 0, 13)]
    # every field of both kinds is filled, except the optional/nullable ones
    assert {r.field for r in water.registers} == {"index", "max_flow", "alarms", "battery"}
    assert water.profile_from == "index" and water.profile_field == "profile"
    air_fields = {f["name"] for f in kinds.KINDS[2]["fields"]} - {"dl"}   # the downlink report
    assert {r.field for r in air.registers} == air_fields
    assert (SHIPPED_MAPS / "generic_water_meter.toml").read_text().lstrip().startswith("#")


def test_good_map(tmp_path: Path) -> None:
    rmap = load_map(_write(tmp_path, GOOD))
    assert rmap.fixed == (("battery", 20),)          # 100 % in 5 % steps
    index = rmap.registers[0]
    assert (index.unit, index.scale, index.line) == ("m³", 0.001, 5)


# (what to change in GOOD, text of the line the error must point at, words in the message)
BAD = [
    ("wrong type", ('type = "u32"', 'type = "float16"'), 'type = "float16"',
     ["registers.index.type", "float16", "u16"]),
    ("unknown field", ('field = "alarms"', 'field = "alarm"'), 'field = "alarm"',
     ["registers.status.field", "unknown field 'alarm'"]),
    ("unknown key", ("scale = 0.001", "scael = 0.001"), "scael", ["registers.index.scael",
                                                                   "unknown key"]),
    ("unknown bit name", ('0 = "leak"', '0 = "leakage"'), "bits = {",
     ["registers.status.bits.0", "leakage"]),
    ("bit number", ('0 = "leak"', '16 = "leak"'), "bits = {", ["bit number must be 0..15"]),
    ("overlap", ("address = 2", "address = 1"), "[registers.status]",
     ["registers.status", "overlap registers.index"]),
    ("unit", ('unit = "m3"', 'unit = "gallon"'), 'unit = "gallon"',
     ["registers.index.unit", "'gallon'", "'L'"]),
    ("function", ("function = 3\naddress = 2", "function = 7\naddress = 2"), "function = 7",
     ["registers.status.function", "1..4"]),
    ("fixed range", ("battery = 100", "battery = 250"), "battery = 250", ["fixed.battery"]),
    ("missing field", ("[fixed]\nbattery = 100\n", ""), 'kind = "water_meter"',
     ["needs field 'battery'"]),
    ("kind", ('kind = "water_meter"', 'kind = "gas_meter"'), 'kind = "gas_meter"',
     ["device.kind", "gas_meter"]),
    ("profile source", ('from = "index"', 'from = "battery"'), 'from = "battery"',
     ["profile.from", "not a field filled by a register"]),
    ("bad toml", ("address = 2", "address = = 2"), "address = = 2", ["invalid TOML"]),
]


@pytest.mark.parametrize(("change", "line_text", "words"),
                         [pytest.param(c, t, w, id=i) for i, c, t, w in BAD])
def test_map_error_names_file_and_line(tmp_path: Path, change: tuple[str, str],
                                       line_text: str, words: list[str]) -> None:
    old, new = change
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = _write(tmp_path, text)
    with pytest.raises(MapError) as info:
        load_map(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{_line(text, line_text)}:"), message
    for word in words:
        assert word in message, message
    assert isinstance(info.value, KnuteError)


def test_duplicate_field(tmp_path: Path) -> None:
    text = GOOD + '\n[registers.total]\nfunction = 4\naddress = 0\ntype = "u32"\n' \
        'field = "index"\n'
    path = _write(tmp_path, text)
    with pytest.raises(MapError, match=r"already filled by registers.index") as info:
        load_map(path)
    assert str(info.value).startswith(f"{path}:{_line(text, 'field = ', '[registers.total]')}:")


def test_settings_report_map_errors_with_line(tmp_path: Path) -> None:
    text = GOOD.replace('type = "u32"', 'type = "u33"')
    path = _write(tmp_path, text)
    table = {"bus": [{"name": "b", "tcp": "127.0.0.1:502"}],
             "device": [{"bus": "b", "unit_id": 1, "device_id": "0x10", "map": "meter.toml"}]}
    with pytest.raises(MapError, match=rf"^{path}:{_line(text, 'u33')}: registers.index.type"):
        parse_settings(table, file="gw.toml", base_dir=str(tmp_path))


@pytest.mark.parametrize(("table", "message"), [
    ({"bus": [{"name": "b"}]}, "exactly one of tcp"),
    ({"bus": [{"name": "b", "tcp": "nohost"}]}, "modbus.bus[0].tcp: must be HOST:PORT"),
    ({"bus": [{"name": "b", "rtu": "/dev/x", "parity": "X"}]}, "modbus.bus[0].parity"),
    ({"bus": [{"name": "b", "rtu": "/dev/x"}],
      "device": [{"bus": "c", "unit_id": 1, "device_id": 1, "map": "generic_water_meter"}]},
     "modbus.device[0].bus: no [[modbus.bus]] named 'c'"),
    ({"bus": [{"name": "b", "rtu": "/dev/x"}],
      "device": [{"bus": "b", "unit_id": 248, "device_id": 1, "map": "generic_water_meter"}]},
     "modbus.device[0].unit_id"),
    ({"bus": [{"name": "b", "rtu": "/dev/x"}],
      "device": [{"bus": "b", "unit_id": 1, "device_id": "xyz", "map": "generic_water_meter"}]},
     "modbus.device[0].device_id"),
    ({"offline_after": 0}, "modbus.offline_after"),
    ({"polling": 1}, "modbus.polling: unknown key"),
])
def test_settings_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(KnuteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_settings(table, file="gw.toml")

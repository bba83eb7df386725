"""A register map's ``[clock]``: the device's own time stamps its polls.

The map format (parsed, validated, read in the same request as the
registers) without processes; then the poller against ``knute modbus-sim``:
a device with a clock is stamped with the time it served, one without with
the poller's clock as before.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from knute.gateway.modbus.poller import ModbusReading, Poller
from knute.gateway.modbus.regmap import (
    MapError,
    device_time,
    load_map,
    parse_map,
    resolve_map_path,
)
from knute.gateway.modbus.settings import parse_settings
from knute.tools.rig.wait import wait_for
from tests.modbus.conftest import SimFactory

MAP = """
[device]
kind = "water_meter"

[registers.index]
function = 3
address = 0
type = "u64"
unit = "L"

[clock]
function = 3
address = 4
type = "u32"
scale = 0.5

[fixed]
battery = 100

[profile]
from = "index"
"""


def test_the_shipped_bulk_meter_reads_its_clock_with_the_totaliser() -> None:
    rmap = load_map(resolve_map_path("bulk_water_meter"))
    assert rmap.clock is not None and (rmap.clock.address, rmap.clock.dtype) == (8, "u32")
    assert [(b.function, b.address, b.count) for b in rmap.reads()] == [(3, 0, 10)]
    assert load_map(resolve_map_path("generic_water_meter")).clock is None


def test_device_time_is_the_register_scaled_and_none_when_unset() -> None:
    rmap = parse_map(MAP)
    assert rmap.clock is not None and rmap.clock.field == "clock"
    assert [(b.function, b.address, b.count) for b in rmap.reads()] == [(3, 0, 6)]
    image = {(3, a): 0 for a in range(6)}
    assert device_time(rmap, image) is None                   # a clock never set
    ticks = 3_500_000_000                                     # half seconds
    image[(3, 4)], image[(3, 5)] = ticks >> 16, ticks & 0xFFFF
    assert device_time(rmap, image) == 1_750_000_000.0
    assert device_time(load_map(resolve_map_path("generic_water_meter")), image) is None


@pytest.mark.parametrize(("old", "new", "words"), [
    ("address = 4", "address = 2", ["clock: holding registers 2..3 overlap registers.index"]),
    ("scale = 0.5", "scale = 0", ["clock.scale", "positive"]),
    ("function = 3\naddress = 4", "function = 1\naddress = 4", ["clock.function", "3..4"]),
    ("scale = 0.5", "scale = 0.5\nunit = \"s\"", ["clock.unit", "unknown"]),
    ("type = \"u32\"\nscale", "scale", ["clock", "type missing"]),
])
def test_a_bad_clock_table_is_one_line_naming_it(tmp_path: Path, old: str, new: str,
                                                 words: list[str]) -> None:
    assert old in MAP
    path = tmp_path / "meter.toml"
    path.write_text(MAP.replace(old, new, 1))
    with pytest.raises(MapError) as info:
        load_map(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    for word in words:
        assert word in message, message


def test_a_poll_is_stamped_with_the_devices_clock(modbus_sim: SimFactory) -> None:
    """The poller's own clock is far off (2001): a device with a clock is stamped with
    the time it served (whole seconds, about now), one without with the poller's."""
    sim = modbus_sim("--device", "1:bulk_water_meter", "--device", "2:generic_water_meter")
    cfg = parse_settings({"bus": [{"name": "sim", "tcp": sim.tcp, "timeout_s": 2.0}],
                          "device": [{"bus": "sim", "unit_id": unit, "device_id": dev,
                                      "map": name, "interval_s": 0.2}
                                     for unit, dev, name in ((1, 0x10, "bulk_water_meter"),
                                                             (2, 0x20, "generic_water_meter"))]},
                         file="test.toml")
    lock = threading.Lock()
    readings: list[ModbusReading] = []

    def on_reading(reading: ModbusReading) -> None:
        with lock:
            readings.append(reading)

    poller = Poller(cfg, on_reading, clock=lambda: 1_000_000_000.0)
    before = time.time()
    poller.start()
    try:
        wait_for(lambda: sum(r.frame["device_id"] == 0x10 for r in readings) >= 3
                 and any(r.frame["device_id"] == 0x20 for r in readings))
    finally:
        poller.stop()
    after = time.time()
    with lock:
        polled = list(readings)
    clocked = [r for r in polled if r.frame["device_id"] == 0x10]
    for reading in clocked:
        assert reading.receiver["clock"] == "device"
        assert reading.received_at == int(reading.received_at)          # the meter's seconds
        assert before - 1 <= reading.received_at <= after + 1
        assert reading.frame["values"]["profile_end_h"] == \
            (int(reading.received_at // 3600) + 1) % 256                # its hours too
    for reading in (r for r in polled if r.frame["device_id"] == 0x20):
        assert "clock" not in reading.receiver
        assert reading.received_at == 1_000_000_000.0

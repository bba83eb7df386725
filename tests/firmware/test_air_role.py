"""The air_quality role against simulated SDS011/PMS5003 sensors and a BME280 image."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.config import ConfigError, air_section
from firmware.drivers.regimage import RegImage
from firmware.roles.air_quality import (
    CLIMATE_FAULT,
    NO2_FAULT,
    PM_BAD_FRAMES,
    PM_FAULT,
    WARMUP,
    Node,
)
from knute.protocol import frame, kinds
from tests.firmware.airsim import (
    EXAMPLE_ADC_P,
    EXAMPLE_ADC_T,
    EXAMPLE_CALIB,
    FakeCtx,
    SimPMS5003,
    SimSDS011,
    bme280_image,
    sds011_frame,
    simulate,
)

KEY = bytes(range(16))
ADC_H = 30000
AIR = {"interval_s": 120, "warmup_s": 10, "sample_s": 20, "climate_every_s": 30}


def _image() -> RegImage:
    return RegImage(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, ADC_H))


def _expected_climate() -> tuple[int, int, int]:
    """(0.1 degC, %, 0.1 hPa) for the example image, from the driver's own numbers."""
    from firmware.drivers.bme280 import BME280
    bme = BME280(_image())
    bme.begin()
    assert bme.read()
    assert bme.temperature == 2508 and bme.pressure == 100656
    return 251, (bme.humidity + 512) // 1024, 10066


def _warm_reading(sensor: Any) -> Any:
    """PM values that are wild during the sensor's first 10 s awake, then steady with one spike."""
    def reading(t_ms: int) -> tuple[int, int]:
        if t_ms - sensor.woke_at <= 10000:
            return 9999, 9999                         # fan spinning up: must be discarded
        if (t_ms // 1000) % 20 == 7:
            return 3000, 3500                         # one spike a window: trimmed
        return 123 + (t_ms // 1000) % 3, 456          # 12.3 .. 12.5 ug/m3
    return reading


def _run(air: dict[str, Any], sensor: Any, image: Any, end_ms: int) -> tuple[FakeCtx, Node]:
    ctx = FakeCtx(air, sensor, image)
    node = Node(ctx)
    node.start()
    simulate(node, sensor, ctx, 0, end_ms)
    return ctx, node


def test_status_bits_follow_the_kinds_table() -> None:
    bits = {name: 1 << i for i, name in enumerate(kinds.AIR_STATUS)}
    assert bits == {"pm_fault": PM_FAULT, "pm_bad_frames": PM_BAD_FRAMES,
                    "climate_fault": CLIMATE_FAULT, "no2_fault": NO2_FAULT, "warmup": WARMUP}


def test_sds011_cycle_discards_warmup_trims_spikes_and_sleeps_between_windows() -> None:
    sensor = SimSDS011(lambda t: (0, 0))
    sensor.reading = _warm_reading(sensor)
    ctx, node = _run(AIR, sensor, _image(), 400_000)
    temp, hum, press = _expected_climate()
    # First frame one window (30 s) after boot, then every 120 s.
    assert [t for t, _ in ctx.sent] == [30_000, 150_000, 270_000, 390_000]
    for _, values in ctx.sent:
        assert values["pm1"] is None                     # the SDS011 has no PM1
        assert 123 <= values["pm2_5"] <= 125
        assert values["pm10"] == 456
        assert (values["temperature"], values["humidity"], values["pressure"]) == (
            temp, hum, press)
        assert values["status"] == 0
        frame.encode("air_quality", 7, 1, values, KEY)   # valid for the kinds table
    assert node.discarded >= 4 * 9
    # The fan ran for the windows only: about 30 s of every 120 s.
    assert 4 * 28_000 <= sensor.on_ms <= 4 * 32_000
    sleeps = [c for c in sensor.commands if c == (6, 1, 0)]
    assert len(sleeps) == 4
    assert sensor.commands[:3] == [(6, 1, 1), (2, 1, 0), (8, 1, 0)]
    # Buses before drivers, the I2C bus first (its register image needs the most room).
    assert ctx.hal.opened == [("i2c", "i2c0"), ("uart", "pm", 9600)]


def test_schedule_survives_the_tick_counter_wrapping() -> None:
    sensor = SimSDS011(lambda t: (0, 0))
    sensor.reading = _warm_reading(sensor)
    ctx = FakeCtx(AIR, sensor, _image())
    node = Node(ctx)
    node.start()
    simulate(node, sensor, ctx, 0, 400_000, tick_base=(1 << 30) - 200_000)
    assert [t for t, _ in ctx.sent] == [30_000, 150_000, 270_000, 390_000]
    assert all(v["status"] == 0 and 123 <= v["pm2_5"] <= 125 for _, v in ctx.sent)


def test_pms5003_passive_mode_requests_frames() -> None:
    air = dict(AIR, pm_sensor="pms5003", pms_mode="passive")
    sensor = SimPMS5003(lambda t: (4, 7, 11))
    ctx, _node = _run(air, sensor, _image(), 160_000)
    assert len(ctx.sent) == 2
    for _, values in ctx.sent:
        assert (values["pm1"], values["pm2_5"], values["pm10"]) == (40, 70, 110)
        assert values["status"] == 0
    assert (0xE1, 0) in sensor.commands              # passive mode
    assert sensor.commands.count((0xE2, 0)) >= 2 * 15
    assert (0xE4, 0) in sensor.commands              # sleep after the send
    assert not sensor.working


def test_pms5003_active_mode() -> None:
    air = dict(AIR, pm_sensor="pms5003")
    sensor = SimPMS5003(lambda t: (1, 2, 3))
    ctx, _ = _run(air, sensor, _image(), 40_000)
    assert [(v["pm1"], v["pm2_5"], v["pm10"]) for _, v in ctx.sent] == [(10, 20, 30)]
    assert (0xE1, 1) in sensor.commands


def test_silent_sensor_sets_pm_fault_and_the_wake_command_is_repeated() -> None:
    sensor = SimSDS011(lambda t: (1, 1), deaf=10**6)
    ctx, _ = _run(AIR, sensor, _image(), 160_000)
    assert len(ctx.sent) == 2
    for _, values in ctx.sent:
        assert values["status"] == PM_FAULT
        assert values["pm2_5"] is None and values["pm10"] is None
        assert values["temperature"] is not None
    wakes = [c for c in sensor.commands if c == (6, 1, 1)]
    assert len(wakes) >= 2 * (30 // 5)


def test_late_sensor_sets_warmup() -> None:
    # Deaf to the first wake commands: it starts 25 s into the 30 s window, so
    # its warm-up (10 s from the first frame) is not over when the window closes.
    sensor = SimSDS011(lambda t: (50, 60), deaf=6)
    ctx, _ = _run(AIR, sensor, _image(), 40_000)
    (_, values), = ctx.sent
    assert values["status"] == WARMUP
    assert values["pm2_5"] is None


def test_bad_frames_set_pm_bad_frames_but_values_are_kept() -> None:
    bad = bytearray(sds011_frame(1, 1))
    bad[8] ^= 0x55
    sensor = SimSDS011(lambda t: (200, 300), garbage=bytes(bad) + b"\x00\x13")
    ctx, node = _run(AIR, sensor, _image(), 40_000)
    (_, values), = ctx.sent
    assert values["status"] == PM_BAD_FRAMES
    assert (values["pm2_5"], values["pm10"]) == (200, 300)
    assert node.pm.bad_frames > 2


def test_few_bad_frames_stay_under_the_limit() -> None:
    bad = bytearray(sds011_frame(1, 1))
    bad[8] ^= 0x55
    sensor = SimSDS011(lambda t: (200, 300))
    ctx = FakeCtx(dict(AIR, bad_frames_max=2), sensor, _image())
    node = Node(ctx)
    node.start()
    sensor.feed(bytes(bad) * 2)
    simulate(node, sensor, ctx, 0, 40_000)
    (_, values), = ctx.sent
    assert values["status"] == 0


def test_missing_bme280_sets_climate_fault_and_recovers_when_it_answers() -> None:
    image = RegImage("device 23\n00: 00\n")              # some other chip only
    sensor = SimSDS011(lambda t: (10, 20))
    ctx = FakeCtx(AIR, sensor, image)
    node = Node(ctx)
    node.start()
    assert any("NOT FOUND" in line for line in ctx.lines)
    simulate(node, sensor, ctx, 0, 40_000)
    (_, values), = ctx.sent
    assert values["status"] == CLIMATE_FAULT
    assert values["temperature"] is None and values["pressure"] is None
    assert values["humidity"] is None
    assert values["pm2_5"] == 10
    frame.encode("air_quality", 7, 1, values, KEY)
    # The sensor is plugged in: the next interval has values and no fault.
    image.load(bme280_image(EXAMPLE_CALIB, EXAMPLE_ADC_T, EXAMPLE_ADC_P, ADC_H))
    simulate(node, sensor, ctx, 40_000, 160_000)
    assert ctx.sent[-1][1]["status"] == 0
    assert ctx.sent[-1][1]["temperature"] == 251


def test_out_of_range_climate_sample_is_a_fault() -> None:
    # Raw temperature far above 85 degC with the example trimming.
    image = RegImage(bme280_image(EXAMPLE_CALIB, 900000, EXAMPLE_ADC_P, ADC_H))
    sensor = SimSDS011(lambda t: (10, 20))
    ctx, _ = _run(AIR, sensor, image, 40_000)
    (_, values), = ctx.sent
    assert values["status"] == CLIMATE_FAULT
    assert values["temperature"] is None


def test_no_sensors_configured_sends_nulls_without_faults() -> None:
    ctx, _node = _run(dict(AIR, pm_sensor="none", climate="none"), None, None, 200_000)
    assert [t for t, _ in ctx.sent] == [30_000, 150_000]
    assert ctx.sent[0][1] == {"pm1": None, "pm2_5": None, "pm10": None, "temperature": None,
                              "humidity": None, "pressure": None, "status": 0}
    assert ctx.hal.opened == []


def test_always_on_when_the_window_covers_the_interval() -> None:
    sensor = SimSDS011(lambda t: (77, 88))
    air = {"interval_s": 20, "warmup_s": 5, "sample_s": 20, "climate_every_s": 5}
    ctx, _ = _run(air, sensor, _image(), 70_000)
    assert [t for t, _ in ctx.sent] == [20_000, 40_000, 60_000]
    assert all(v["pm2_5"] == 77 and v["status"] == 0 for _, v in ctx.sent)
    assert (6, 1, 0) not in sensor.commands               # never put to sleep


def test_deferred_send_is_logged_and_the_schedule_goes_on() -> None:
    sensor = SimSDS011(lambda t: (10, 20))
    ctx = FakeCtx(AIR, sensor, _image())
    ctx.accept = False
    node = Node(ctx)
    node.start()
    simulate(node, sensor, ctx, 0, 160_000)
    assert len(ctx.sent) == 2
    assert any("deferred" in line for line in ctx.lines)


def test_poll_asks_to_sleep_until_the_window_opens() -> None:
    sensor = SimSDS011(lambda t: (10, 20))
    ctx = FakeCtx(dict(AIR, climate="none"), sensor, None)
    node = Node(ctx)
    node.start()
    simulate(node, sensor, ctx, 0, 31_000)
    ctx.now = 31_000
    # Next window opens at 150 s - 30 s = 120 s.
    assert node.poll(31_000) == 120_000 - 31_000


@pytest.mark.parametrize("air, message", [
    ({"pm_sensor": "sds018"}, "air.pm_sensor"),
    ({"interval_s": 5}, "air.interval_s"),
    ({"warmup_s": "30"}, "air.warmup_s"),
    ({"bme280_addr": 0x40}, "air.bme280_addr"),
    ({"intervall_s": 600}, "air.intervall_s is not a known key"),
    ({"pms_cf1": 1}, "air.pms_cf1"),
    ({"pm_uart": 3}, "air.pm_uart"),
    ([], "air must be an object"),
])
def test_bad_config_names_the_key(air: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        air_section(air)


def test_defaults() -> None:
    cfg = air_section(None)
    assert cfg["interval_s"] == 600
    assert cfg["warmup_s"] == 30
    assert cfg["pm_sensor"] == "sds011"

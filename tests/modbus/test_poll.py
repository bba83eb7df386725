"""The poller against ``knute modbus-sim`` subprocesses, over TCP and over a pty (RTU).

Waits are bounded loops on a condition (never a timed assertion): what is
asserted is what the readings, counters and conditions say, and the order in
which they came.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from knute.gateway import message
from knute.gateway.modbus.history import load_state
from knute.gateway.modbus.poller import DeviceCondition, ModbusReading, Poller
from knute.gateway.modbus.settings import ModbusSettings, parse_settings
from knute.protocol import kinds
from knute.tools.rig.wait import wait_for
from tests.conftest import free_port
from tests.modbus.conftest import SimFactory

WAIT_S = 20.0


class Collector:
    """Readings and conditions as the poller hands them on, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readings: list[ModbusReading] = []
        self.conditions: list[DeviceCondition] = []
        self.poller: Poller | None = None
        self.stats_at_reading: list[dict[str, Any]] = []
        self.events: list[str] = []      # "reading" / "offline" / "online", in arrival order

    def reading(self, reading: ModbusReading) -> None:
        snap = self.poller.stats() if self.poller is not None else {}
        with self.lock:
            self.readings.append(reading)
            self.stats_at_reading.append(snap)
            self.events.append("reading")

    def condition(self, change: DeviceCondition) -> None:
        with self.lock:
            self.conditions.append(change)
            self.events.append(change.condition)

    def of(self, device_id: int) -> list[ModbusReading]:
        with self.lock:
            return [r for r in self.readings if r.frame["device_id"] == device_id]

    def conditions_of(self, device_id: int) -> list[str]:
        with self.lock:
            return [c.condition for c in self.conditions if c.device_id == device_id]


def settings(bus: dict[str, Any], devices: list[tuple[int, int, str, dict[str, Any]]],
             **top: Any) -> ModbusSettings:
    """[modbus] settings for one bus named "sim": (unit, device id, map, extra keys)."""
    table: dict[str, Any] = {"bus": [{"name": "sim", **bus}], "device": [], **top}
    for unit, dev_id, map_name, extra in devices:
        table["device"].append({"bus": "sim", "unit_id": unit, "device_id": dev_id,
                                "map": map_name, "interval_s": 0.2, **extra})
    return parse_settings(table, file="test.toml")


def run_poller(cfg: ModbusSettings, **kwargs: Any) -> tuple[Poller, Collector]:
    col = Collector()
    poller = Poller(cfg, col.reading, on_condition=col.condition, **kwargs)
    col.poller = poller
    poller.start()
    return poller, col


def device_stats(poller: Poller, device_id: int) -> dict[str, Any]:
    entry: dict[str, Any] = poller.stats()["devices"][f"{device_id:08x}"]
    return entry


WATER, AIR = 0x1000A001, 0x2000A002


def check_like_frames(col: Collector, device_id: int, kind: str, receiver: dict[str, Any]) -> None:
    """Readings of one device have decode()'s shape, valid values and fcnt 1, 2, 3, ..."""
    readings = col.of(device_id)
    kind_def = kinds.KINDS[kinds.KIND_IDS[kind]]
    for n, reading in enumerate(readings, start=1):
        frame = reading.frame
        assert set(frame) == {"kind", "kind_id", "device_id", "fcnt", "tag_len", "values"}
        assert frame["kind"] == kind and frame["kind_id"] == kinds.KIND_IDS[kind]
        assert frame["fcnt"] == n and frame["tag_len"] == 0
        assert kinds.unpack(kind_def, kinds.pack(kind_def, frame["values"])) == frame["values"]
        rx = dict(reading.receiver)
        round_trip = rx.pop("round_trip_ms")
        assert rx == receiver and isinstance(round_trip, float) and round_trip >= 0.0


def test_tcp_readings_are_frames(modbus_sim: SimFactory) -> None:
    sim = modbus_sim("--device", "1:generic_water_meter", "--device", "2:generic_air_station",
                     "--alarm", "1:leak", "--alarm", "2:warmup")
    cfg = settings({"tcp": sim.tcp, "timeout_s": 2.0},
                   [(1, WATER, "generic_water_meter", {}), (2, AIR, "generic_air_station", {})])
    poller, col = run_poller(cfg)
    try:
        wait_for(lambda: len(col.of(WATER)) >= 4 and len(col.of(AIR)) >= 4)
    finally:
        poller.stop()
    check_like_frames(col, WATER, "water_meter", {"source": "modbus", "bus": "sim",
                                                  "unit_id": 1})
    check_like_frames(col, AIR, "air_quality", {"source": "modbus", "bus": "sim", "unit_id": 2})

    water = [r.frame["values"] for r in col.of(WATER)]
    index = [v["index"] for v in water]
    assert index == sorted(index) and index[-1] > index[0]      # the meter runs
    for values, reading in zip(water, col.of(WATER), strict=True):
        assert values["alarms"] == 1 << kinds.WATER_ALARMS.index("leak")
        assert values["battery"] == 19                           # 95 % in 5 % steps
        assert 8000 <= values["max_flow"] <= 40000               # 8..40 m³/h in L/h
        assert values["profile_end_h"] == (int(reading.received_at // 3600) + 1) % 256
        assert sum(values["profile"]) <= index[-1] - index[0] + 1
    air = [r.frame["values"] for r in col.of(AIR)]
    for values in air:
        assert values["status"] == 1 << kinds.AIR_STATUS.index("warmup")
        assert 20 <= values["pm2_5"] <= 800 and values["pm1"] < values["pm2_5"] < values["pm10"]
        assert 9700 <= values["pressure"] <= 10400 and -400 <= values["temperature"] <= 850
    assert len({v["pm2_5"] for v in air}) > 1 or len({v["no2"] for v in air}) > 1

    # From here on it is a reading like any radio frame's.
    first = col.of(WATER)[0]
    doc = message.reading_dict(first.frame, device=f"{WATER:08x}", gateway_id="gw-test",
                               received_at=first.received_at, receivers=[first.receiver],
                               source="modbus", site=None)
    assert doc["id"] == f"{WATER:08x}:1" and doc["source"] == "modbus"
    assert doc["alarms"] == ["leak"] and doc["battery"] == 95
    assert doc["readings"]["index"]["unit"] == "L" and len(doc["profile"]) >= 1

    stats = poller.stats()
    assert stats["online"] == 2 and stats["offline"] == []
    assert stats["failures"] == {}
    assert stats["readings"] == len(col.readings)


def test_rtu_over_pty_with_faults(modbus_sim: SimFactory) -> None:
    sim = modbus_sim("--rtu-pty", "--device", "1:generic_water_meter",
                     "--device", "2:generic_air_station", "--device", "3:generic_water_meter",
                     "--device", "4:generic_air_station", "--crc-error-unit", "3",
                     "--wrong-unit", "4:9", "--silent-unit", "5", tcp=False)
    # A timeout long enough for any answer on a loaded machine: the CRC error and the
    # wrong unit must be seen as themselves, never as a late answer taken for a timeout
    # (nor a late answer read as the reply to the next request).
    # The client waits out its timeout after a bad answer (CRC, other unit), so those
    # units get a shorter one; still long enough that their answer, however late on a
    # loaded machine, is the one judged. The silent unit never answers.
    fast = {"timeout_s": 2.0, "retries": 0, "interval_s": 0.3}
    bad = {"timeout_s": 1.0, "retries": 0, "interval_s": 0.3}
    silent = {"timeout_s": 0.3, "retries": 0, "interval_s": 0.3}
    cfg = settings({"rtu": sim.rtu, "baudrate": 19200},
                   [(1, WATER, "generic_water_meter", fast), (2, AIR, "generic_air_station", fast),
                    (3, 3, "generic_water_meter", bad), (4, 4, "generic_air_station", bad),
                    (5, 5, "generic_air_station", silent)], offline_after=2)
    poller, col = run_poller(cfg)
    try:
        wait_for(lambda: len(col.of(WATER)) >= 3 and len(col.of(AIR)) >= 3
                          and all(col.conditions_of(d) == ["offline"] for d in (3, 4, 5)))
    finally:
        poller.stop()
    check_like_frames(col, WATER, "water_meter", {"source": "modbus", "bus": "sim",
                                                  "unit_id": 1})
    check_like_frames(col, AIR, "air_quality", {"source": "modbus", "bus": "sim", "unit_id": 2})
    expected = {3: "crc", 4: "wrong_unit", 5: "timeout"}
    for dev, reason in expected.items():
        assert col.of(dev) == []
        entry = device_stats(poller, dev)
        assert set(entry["failures"]) == {reason}, entry
        assert entry["condition"] == "offline"
        change = next(c for c in col.conditions if c.device_id == dev)
        assert change.reason == reason and change.consecutive_failures == 2
        assert change.to_dict()["device"] == f"{dev:08x}"
    for dev in (WATER, AIR):
        assert device_stats(poller, dev)["failures"] == {}
        assert col.conditions_of(dev) == []


def test_tcp_faults_and_a_slow_device_does_not_delay_a_healthy_one(
        modbus_sim: SimFactory) -> None:
    sim = modbus_sim("--device", "1:generic_water_meter", "--device", "3:generic_water_meter",
                     "--device", "4:generic_air_station", "--device", "6:generic_air_station",
                     "--device", "7:generic_water_meter", "--exception-unit", "3",
                     "--silent-unit", "4", "--short-unit", "6", "--slow-ms", "7:1500")
    faulty = {"timeout_s": 0.3, "retries": 1}
    cfg = settings({"tcp": sim.tcp},
                   [(1, WATER, "generic_water_meter", {"interval_s": 0.1, "timeout_s": 2.0}),
                    (3, 3, "generic_water_meter", faulty), (4, 4, "generic_air_station", faulty),
                    (6, 6, "generic_air_station", faulty),
                    (7, 7, "generic_water_meter", {"timeout_s": 0.8, "retries": 0})])
    poller, col = run_poller(cfg)
    try:
        wait_for(lambda: all(col.conditions_of(d) == ["offline"] for d in (3, 4, 6, 7))
                          and device_stats(poller, 7)["polls_failed"] >= 4)
    finally:
        poller.stop()
    expected = {3: "exception", 4: "timeout", 6: "byte_count", 7: "timeout"}
    for dev, reason in expected.items():
        entry = device_stats(poller, dev)
        assert set(entry["failures"]) == {reason}, entry
        assert col.of(dev) == []
        change = next(c for c in col.conditions if c.device_id == dev)
        assert change.condition == "offline" and change.reason == reason
        assert change.consecutive_failures == 3
    # retries: two attempts per failed poll for the devices with retries = 1
    for dev in (3, 4, 6):
        entry = device_stats(poller, dev)
        assert sum(entry["failures"].values()) >= 2 * 3
    assert device_stats(poller, 3)["exception_codes"] == {
        "2": device_stats(poller, 3)["failures"]["exception"]}
    assert poller.stats()["exception_codes"]["2"] >= 6

    healthy = device_stats(poller, WATER)
    assert healthy["failures"] == {} and healthy["condition"] == "online"
    assert col.conditions_of(WATER) == []
    # Had the healthy meter waited behind the slow one, at most one of its readings
    # could fall between two of the slow device's failed polls. Count its readings by
    # how many failed polls the slow device had at that moment.
    between: dict[int, int] = {}
    with col.lock:
        for reading, snap in zip(col.readings, col.stats_at_reading, strict=True):
            if reading.frame["device_id"] == WATER:
                slow_failed = snap["devices"][f"{7:08x}"]["polls_failed"]
                between[slow_failed] = between.get(slow_failed, 0) + 1
    busiest = max(n for k, n in between.items() if 1 <= k < 4)
    assert busiest >= 4, between   # about 10 here; 2 when they share one connection


def test_offline_then_online_when_the_device_returns(modbus_sim: SimFactory) -> None:
    port = free_port()
    sim = modbus_sim("--device", "1:generic_water_meter", port=port)
    cfg = settings({"tcp": sim.tcp},
                   [(1, WATER, "generic_water_meter", {"timeout_s": 0.3, "retries": 0})],
                   offline_after=2)
    poller, col = run_poller(cfg)
    try:
        wait_for(lambda: len(col.of(WATER)) >= 2)
        sim.stop()
        wait_for(lambda: col.conditions_of(WATER) == ["offline"])
        modbus_sim("--device", "1:generic_water_meter", port=port)
        wait_for(lambda: col.conditions_of(WATER) == ["offline", "online"]
                          and col.events[-2:] == ["reading", "reading"])
    finally:
        poller.stop()
    offline, online = (c for c in col.conditions if c.device_id == WATER)
    assert offline.reason in ("connect", "timeout") and offline.consecutive_failures == 2
    assert online.reason is None and online.since >= offline.since
    fcnts = [r.frame["fcnt"] for r in col.of(WATER)]
    assert fcnts == list(range(1, len(fcnts) + 1))
    # No reading between offline and online; the first one after the return follows
    # the online condition at once.
    with col.lock:
        events = list(col.events)
    first_off, first_on = events.index("offline"), events.index("online")
    assert events[:first_off] == ["reading"] * first_off and first_off >= 2
    assert first_on == first_off + 1
    assert events[first_on + 1:] == ["reading"] * (len(events) - first_on - 1)
    assert len(events) - first_on - 1 >= 2
    assert device_stats(poller, WATER)["condition"] == "online"


def test_fcnt_keeps_increasing_across_restarts(modbus_sim: SimFactory, tmp_path: Path) -> None:
    sim = modbus_sim("--device", "1:generic_water_meter")
    state = tmp_path / "modbus-state.json"
    cfg = settings({"tcp": sim.tcp, "timeout_s": 2.0},
                   [(1, WATER, "generic_water_meter", {"interval_s": 0.1})],
                   state_file=str(state))
    last = 0
    for run, spool_counter in enumerate((None, None, 500)):
        last_fcnt = {WATER: spool_counter} if spool_counter else None
        poller, col = run_poller(cfg, last_fcnt=last_fcnt)
        try:
            wait_for(lambda col=col: len(col.of(WATER)) >= 3)  # type: ignore[misc]
        finally:
            poller.stop()
        fcnts = [r.frame["fcnt"] for r in col.of(WATER)]
        start = max(last, spool_counter or 0) + 1
        assert fcnts == list(range(start, start + len(fcnts))), (run, fcnts)
        last = fcnts[-1]
        saved = load_state(str(state))[WATER]
        assert saved.fcnt == last and saved.hours    # hour-boundary samples kept too


def test_sim_cli_errors(knute_bin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nkind = "air_quality"\n\n[registers.pm1]\nfunction = 4\n'
                   'address = 0\ntype = "float16"\n')
    for args, words in ((["--device", "1:no_such_map"], "'no_such_map' is neither a .toml"),
                        (["--device", f"1:{bad}"], f"{bad}:7: registers.pm1.type"),
                        (["--device", "x"], "expected UNIT:VALUE")):
        proc = subprocess.run([str(knute_bin), "modbus-sim", *args, "--tcp",
                               f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

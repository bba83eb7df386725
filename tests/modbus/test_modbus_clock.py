"""``[gateway] clock_speed`` for polled meters: a simulation's Modbus polls are stamped,
and their hourly profile built, on the simulated clock as radio frames are."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from knute.gateway.message import iso_utc
from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.modbus.conftest import SimFactory

DEVICE = 0x1000A001          # a water meter: unit 1 of the default simulator
SPEED = 3600.0               # a simulated hour every wall second


def _profile_hours(doc: dict[str, Any]) -> list[str]:
    return [slot["start"] for slot in doc.get("profile", [])]


def test_polls_run_on_the_simulated_clock(modbus_sim: SimFactory, mosquitto: Broker,
                                          tmp_path: Path) -> None:
    sim = modbus_sim("--seed", "3")
    start = time.time() - 10.0          # the simulation began 10 s (10 simulated hours) ago
    gateway = GatewayProcess(tmp_path / "gw")
    gateway.write_config(f"""
[gateway]
id = "sim"
clock_speed = {SPEED}
clock_start = {start}
{status_and_broker(gateway.status_socket, mosquitto.host, mosquitto.port, "t")}
[modbus]
state_file = "modbus-state.json"
[[modbus.bus]]
name = "plant"
tcp = "{sim.tcp}"
timeout_s = 1
[[modbus.device]]
bus = "plant"
unit_id = 1
device_id = "{DEVICE:08x}"
map = "generic_water_meter"
interval_s = 0.2
""")
    gateway.cli("devices", "add", f"{DEVICE:08x}", "--kind", "water_meter", "--generate-key")
    watch = Subscriber(mosquitto.host, mosquitto.port, f"t/water_meter/{DEVICE:08x}/up")
    try:
        gateway.start()
        before = time.time()

        def with_hours() -> list[dict[str, Any]]:
            return [d for d in watch.first_copies() if len(_profile_hours(d)) >= 4]

        doc = wait_for(with_hours, 30, "a reading whose profile spans 4 simulated hours")[-1]
        after = time.time()
    finally:
        watch.close()
        gateway.stop()
        gateway.close()
    # Stamped on the simulation's clock: 10 hours and more ahead of the wall clock.
    low, high = (start + (t - start) * SPEED for t in (before - 1, after + 1))
    assert iso_utc(low) <= doc["received_at"] <= iso_utc(high), (doc["received_at"], low)
    # Its hourly slots are simulated hours, consecutive, the newest the running one.
    hours = _profile_hours(doc)
    assert hours == sorted(hours) and len(set(hours)) == len(hours)
    assert hours[-1] <= doc["received_at"] < doc["profile"][-1]["end"]
    assert all(a["end"] == b["start"] for a, b in zip(doc["profile"], doc["profile"][1:],
                                                      strict=False))

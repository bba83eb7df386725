"""The water_meter role on the MicroPython unix port, frames read from a pty.

Time runs at 36,000 simulated seconds per real second (a day in 2.4 s); pulse
events carry simulated timestamps, so results do not depend on how fast the
machine is.
"""

from __future__ import annotations

import os
from typing import Any

from knute.tools.rig.node import HOUR_T0, pulse_lines, water_config
from tests.firmware.conftest import NodeFactory

LEAK, BURST, BACKFLOW, TAMPER, DRY, LOW_BATTERY = 1, 2, 4, 8, 16, 32
H0 = HOUR_T0 // 3600


def _run(bench_node: NodeFactory, config: dict[str, Any], pulses: str, hours: float,
         extra_files: dict[str, str] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    config["bench"]["stop_after_s"] = int(hours * 3600)
    # The stepped clock (time_scale 0): on a scaled one the 0.2 h after the last
    # send is a few ms of real time, and a loaded host's stall skipped that send.
    # Every input carries its own time (@T pulse lines), so nothing needs real time.
    config["bench"]["time_scale"] = 0
    node = bench_node(config)
    (node.dir / "pulses.txt").write_text(pulses)
    for name, text in (extra_files or {}).items():
        (node.dir / name).write_text(text)
    node.start()
    assert node.wait() == 0, node.console()
    return node, node.frames()


def test_index_and_hourly_profile(bench_node: NodeFactory) -> None:
    hourly = [100, 0, 334, 200, 500, 100]          # 1,234 pulses at 1 L/pulse
    node, frames = _run(bench_node, water_config(), pulse_lines(HOUR_T0, hourly), 6.2)
    assert len(frames) == 1, node.console()
    values = frames[0]["values"]
    assert values["index"] == 1234
    assert values["profile"] == hourly
    assert values["profile_end_h"] == (H0 + 6) % 256
    assert values["alarms"] == 0
    # Routine frames carry no max_flow (a null, as the downlink report follows it).
    assert values.get("max_flow") is None
    assert frames[0]["device_id"] == 4660 and frames[0]["fcnt"] == 0
    assert node.state("meter")["index_ml"] == 1234000
    assert "heap:" in node.console()


def test_litres_per_pulse_and_debounce(bench_node: NodeFactory) -> None:
    # 10 L/pulse; the last event is 10 edges 5 ms apart: with 20 ms debounce,
    # edges at 0, 20 and 40 ms count (3 pulses), the rest are contact bounce.
    pulses = pulse_lines(HOUR_T0, [12, 0, 0, 0, 0, 0]) + f"@{HOUR_T0 + 7200 + 5} 10 5\n"
    cfg = water_config(litres_per_pulse=10, debounce_ms=20)
    _node, frames = _run(bench_node, cfg, pulses, 6.2)
    assert [f["values"]["profile"] for f in frames] == [[120, 0, 30, 0, 0, 0]]
    assert frames[0]["values"]["index"] == 150


def test_trickle_for_24_hours_raises_leak(bench_node: NodeFactory) -> None:
    trickle = [6] * 30                              # 1 L every 10 minutes, all day
    node, frames = _run(bench_node, water_config(), pulse_lines(HOUR_T0, trickle, 6), 24.2)
    ends = [f["values"]["profile_end_h"] for f in frames]
    assert ends == [(H0 + h) % 256 for h in (6, 12, 18, 24)], node.console()
    alarms = [f["values"]["alarms"] for f in frames]
    assert alarms == [0, 0, 0, LEAK]
    assert frames[2]["values"].get("max_flow") is None
    assert frames[3]["values"]["max_flow"] == 60    # 1 L in a 60 s window = 60 L/h
    assert [f["fcnt"] for f in frames] == [0, 1, 2, 3]


def test_one_dry_hour_a_day_is_no_leak(bench_node: NodeFactory) -> None:
    trickle = [6] * 30
    trickle[13] = 0
    _node, frames = _run(bench_node, water_config(), pulse_lines(HOUR_T0, trickle, 6), 24.2)
    assert [f["values"]["alarms"] for f in frames] == [0, 0, 0, 0]


def test_overlapping_profiles_cover_a_lost_frame(bench_node: NodeFactory) -> None:
    hourly = list(range(1, 19))
    cfg = water_config(profile_len=12)
    _node, frames = _run(bench_node, cfg, pulse_lines(HOUR_T0, hourly, 12), 18.2)
    assert len(frames) == 3
    # Lose the middle frame: the last one still carries hours 7..18.
    last = frames[2]["values"]
    assert last["profile"] == hourly[6:]
    assert frames[0]["values"]["profile"] == hourly[:6]   # fewer hours known at first


def test_burst_backflow_tamper_low_battery(bench_node: NodeFactory) -> None:
    cfg = water_config(burst_lph=1000, backflow_l=3, tamper="tamper", battery="battery")
    cfg["bench"]["pin"] = {"tamper": "tamper.txt"}
    cfg["bench"]["adc"] = {"battery": "battery.txt"}
    pulses = f"@{HOUR_T0 + 7200} 50\n@{HOUR_T0 + 9000} -5\n"   # 50 L in one minute
    node, frames = _run(bench_node, cfg, pulses, 6.2,
                        {"tamper.txt": "1\n", "battery.txt": "3100\n"})
    values = frames[0]["values"]
    assert values["alarms"] == BURST | BACKFLOW | TAMPER | LOW_BATTERY, node.console()
    assert values["max_flow"] == 3000
    assert values["battery"] == (3100 - 3000) * 20 // 600
    assert values["index"] == 45


def test_pulses_from_a_pipe(bench_node: NodeFactory) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["jitter_s"] = 0
    # Half speed of the other tests: the lines must reach the node before their time.
    cfg["bench"].update({"time_scale": 1800, "stop_after_s": 2 * 3600 + 900})
    node = bench_node(cfg)
    fifo = node.dir / "pulses.txt"
    os.mkfifo(fifo)
    node.start()
    node.wait_line("heap:")
    # A writer that comes and goes, as a test rig or a logic-analyser replay would.
    with open(fifo, "w") as pipe:
        pipe.write(f"@{HOUR_T0 + 2700} 7\n")
    with open(fifo, "w") as pipe:
        pipe.write(f"@{HOUR_T0 + 6300} 9\n")
    assert node.wait() == 0, node.console()
    assert [f["values"]["profile"] for f in node.frames()] == [[7], [9]]

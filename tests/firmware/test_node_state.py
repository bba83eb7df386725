"""Boot, safe mode, frame-counter reservation and power cuts on the unix port."""

from __future__ import annotations

import json

import pytest

from knute.tools.rig.node import HOUR_T0, pulse_lines, water_config
from tests.firmware.conftest import NodeFactory


@pytest.mark.parametrize("text, reason", [
    (None, "no config.json"),
    ('{"role": "water_meter", "device_id": 46', "not valid JSON"),
    ('{"role": "kettle", "device_id": 1}', "role must be one of"),
    ('{"role": "water_meter", "device_id": 1, "key": "00"}', "key must be 32 hex digits"),
    ('{"role": "water_meter", "device_id": 1, "key": "000102030405060708090a0b0c0d0e0f",'
     ' "water": {"sends_per_day": 4, "profile_len": 3}}',
     "profile_len must be at least 24 / sends_per_day = 6"),
    ('{"role": "radio_bridge", "device_id": 1, "radio": {"freq_hz": 868650000}}',
     "not inside one EU868 sub-band"),
])
def test_bad_config_gives_safe_mode_not_a_crash(bench_node: NodeFactory, text: str | None,
                                                reason: str) -> None:
    node = bench_node(water_config())
    path = node.dir / "config.json"
    if text is None:
        path.unlink()
    else:
        path.write_text(text)
    node.start()
    assert node.wait() == 3
    console = node.console()
    assert "SAFE MODE" in console and reason in console, console
    assert "Traceback" not in console


def test_boot_loop_guard(bench_node: NodeFactory) -> None:
    cfg = water_config()
    cfg["power"] = {"boot_loop_limit": 2}
    cfg["bench"]["stop_after_s"] = 60           # stops before its first send
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text("")
    for _ in range(2):
        node.start()
        assert node.wait() == 0
    node.start()
    assert node.wait() == 3
    assert "boot loop: 2 resets without a completed send" in node.console()


def test_kill9_during_counter_write_never_reuses_a_counter(bench_node: NodeFactory) -> None:
    """Cut the power (SIGKILL) in the middle of the frame-counter write, three times."""
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["fcnt_block"] = 2
    cfg["jitter_s"] = 0
    cfg["power"] = {"boot_loop_limit": 10}
    # The second counter write of each run stays paused before its rename until the
    # kill: the kill lands inside the write by the node's word, whatever the load.
    # (The other counter writes pause too, to no purpose here: 1 ms, not 300.)
    cfg["bench"].update({"trace_writes": True, "pause_writes_ms": 1,
                         "pause_writes_of": ["fcnt"], "hold_write": ["fcnt", 2],
                         "stop_after_s": 8 * 3600,
                         # A stepped clock: the pauses and the load move no simulated time,
                         # so every run reaches its second counter write before the end.
                         "time_scale": 0})
    node = bench_node(cfg)      # the default 64 KiB heap, instrumentation included
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [30] * 48, 6))
    cuts = 0
    for run in range(4):
        if run == 3:
            del cfg["bench"]["hold_write"]      # the last run goes on to its end
            node.write_config(cfg)
        node.start()
        if run < 3:
            node.wait_line("knute: holding the fcnt write", count=cuts + 1)
            node.kill9()
            cuts += 1
            leftover = list((node.dir / "state").glob("*.tmp"))
            assert [p.name for p in leftover] == ["fcnt.tmp"]
        else:
            assert node.wait() == 0
    frames = node.frames()
    fcnts = [f["fcnt"] for f in frames]
    assert len(fcnts) >= 6, node.console()
    assert fcnts == sorted(set(fcnts)), fcnts        # strictly increasing: no reuse
    assert node.console().count("a write was cut short") == cuts
    # The index never goes back either: at most the pulses since the last save are lost.
    indexes = [f["values"]["index"] for f in frames]
    assert indexes == sorted(indexes)


def test_power_cut_loses_only_pulses_since_the_last_save(bench_node: NodeFactory) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["jitter_s"] = 0
    # The stepped clock: at 36000x the 600 s after the last send are 17 ms of real
    # time, which a loaded host's stall can swallow with the send.
    cfg["bench"].update({"stop_after_s": 3 * 3600 + 600, "time_scale": 0})
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [60, 60, 60], 6))
    node.start()
    assert node.wait() == 0
    saved = node.state("meter")
    assert saved["index_ml"] == 180000 and saved["hour"] == HOUR_T0 // 3600 + 3
    # Restart from the saved state: the index carries on.
    cfg["bench"].update({"start_time": HOUR_T0 + 3 * 3600 + 700, "stop_after_s": 3600})
    node.write_config(cfg)
    (node.dir / "pulses.txt").write_text(f"@{HOUR_T0 + 3 * 3600 + 800} 7\n")
    node.start()
    assert node.wait() == 0
    last = node.frames()[-1]["values"]
    assert last["index"] == 187 and last["profile"] == [7]
    assert json.loads((node.dir / "state" / "boots.json").read_text()) == 0


def test_exhausted_frame_counter_stops_sending(bench_node: NodeFactory) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["bench"].update({"stop_after_s": 4 * 3600, "time_scale": 0})    # load-proof
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [3, 3, 3, 3], 6))
    (node.dir / "state").mkdir()
    (node.dir / "state" / "fcnt.json").write_text('{"next": 16777214}')
    node.start()
    assert node.wait() == 0
    assert [f["fcnt"] for f in node.frames()] == [16777214, 16777215]
    assert node.console().count("frame counter exhausted") == 1
    assert node.state("fcnt") == {"next": 16777216}

"""LoRa meters on the bench radio: hopping over the channel plan, spread in time.

Process level, on the real unix port (64- and 32-bit builds): a meter with the
default plan sends on several of the eight concentrator channels and a bridge
listening on the plan forwards each packet with the channel it came on; a
district whose power returns at one instant (same boot time, same random
seed) does not send in step; a bad channel list is one safe-mode line naming
the key.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from firmware.config import EU868_CHANNELS
from knute.protocol import stream
from knute.tools.rig.node import HOUR_T0, KEY_HEX, pulse_lines, water_config
from tests.firmware.conftest import NodeFactory
from tests.firmware.test_radio_bridge import bridge_config

SENT = re.compile(r"knute: sent fcnt=\d+ bytes=\d+ toa_ms=\d+ t=(\d+) ")


def _lora_meter(device_id: int, **water: int) -> dict[str, Any]:
    cfg = water_config(**water)
    cfg["device_id"] = device_id
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"sf": 9}                     # the default channel plan
    cfg["bench"]["radio"] = {"path": "air.txt"}
    return cfg


def test_meter_hops_over_the_plan_and_the_bridge_hears_every_channel(
        bench_node: NodeFactory) -> None:
    cfg = _lora_meter(0x1234, sends_per_day=24, profile_len=1)
    cfg["send_phase_s"] = 0
    # The stepped clock: at the harness's 36000x the 600 s after the 16th send are
    # 17 ms of real time, which a loaded host's stall can swallow with the send.
    cfg["bench"].update({"stop_after_s": 16 * 3600 + 600, "time_scale": 0})
    meter = bench_node(cfg, name="meter")
    (meter.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [3] * 17, 6))
    meter.start()
    assert meter.wait() == 0, meter.console()
    lines = (meter.dir / "air.txt").read_text().splitlines()
    assert len(lines) == 16
    # RX <rssi> <snr> <hex> <end_ms> <freq_hz> <sf>
    assert all(len(line.split()) == 7 for line in lines), lines
    freqs = [int(line.split()[5]) for line in lines]
    assert set(freqs) <= set(EU868_CHANNELS)
    assert len(set(freqs)) >= 4, freqs            # 16 draws over 8 channels
    assert {int(line.split()[6]) for line in lines} == {9}

    # A bridge on the plan forwards all, each RADIO record with its own channel;
    # a packet on a channel outside its list is dropped.
    bridge = bench_node(bridge_config(channels=list(EU868_CHANNELS)), name="bridge")
    foreign = lines[0].split()
    foreign[5] = "869525000"
    (bridge.dir / "radio.txt").write_text("\n".join([*lines, " ".join(foreign)]) + "\n")
    bridge.start()
    assert bridge.wait() == 0, bridge.console()
    got = [stream.unpack_radio(body) for rtype, body in bridge.records()
           if rtype == stream.REC_RADIO]
    assert [meta["freq_hz"] for meta, _ in got] == freqs
    assert "dropped=1 forwarded=16" in bridge.console()


def test_a_district_back_from_a_power_cut_does_not_send_in_step(
        bench_node: NodeFactory) -> None:
    # Five meters boot at the same instant with the same random seed (the
    # worst case: identical generators); each sends once per 6-hour interval.
    period = 6 * 3600
    phases = []
    for n in range(5):
        cfg = _lora_meter(0x00C0FF00 + n)
        # The stepped clock (time_scale 0): the send time comes from the schedule, not
        # from how long a loaded machine held the node up.
        # The power returns ten minutes before an interval starts (at HOUR_T0 + period).
        cfg["bench"].update({"start_time": HOUR_T0 + period - 600,
                             "stop_after_s": period + 1200, "time_scale": 0})
        node = bench_node(cfg, name=f"m{n}")
        (node.dir / "pulses.txt").write_text("")
        node.start()
        assert node.wait() == 0, node.console()
        sent = [int(t) for t in SENT.findall(node.console())]
        found = re.search(r"phase=(\d+) s", node.console())
        assert found is not None and len(sent) == 1, node.console()
        phase = int(found.group(1))
        assert 0 <= phase < period
        # The frame leaves at the node's phase into the interval (plus jitter_s, 5 s,
        # and the bench's time resolution).
        assert 0 <= sent[0] - (HOUR_T0 + period + phase) <= 600, (sent, phase)
        phases.append(phase)
    # Spread over the interval instead of all at the hour: no two meters within
    # ten minutes of each other, and the five span more than a quarter of it.
    gaps = [abs(a - b) for a, b in itertools.combinations(phases, 2)]
    assert min(gaps) > 600, sorted(phases)
    assert max(phases) - min(phases) > period // 4, sorted(phases)


@pytest.mark.parametrize("channels, reason", [
    ([], "radio.channels must be a list of 1..16"),
    ([868100000, "868.3"], "radio.channels[1] must be an integer"),
    ([868100000, 868100000], "radio.channels[1] repeats 868100000"),
    ([868100000, 868650000], "radio.channels[1]: channel 868650000 Hz (bw 125000) is not "
                             "inside one EU868 sub-band"),
])
def test_bad_channel_list_is_one_safe_mode_line(bench_node: NodeFactory,
                                                channels: list[object], reason: str) -> None:
    cfg = _lora_meter(7)
    cfg["radio"] = {"channels": channels}
    node = bench_node(cfg)
    node.start()
    assert node.wait() == 3
    console = node.console()
    assert "SAFE MODE" in console and reason in console, console
    assert "Traceback" not in console


def test_air_nodes_booted_together_spread_their_first_frames(
        bench_node: NodeFactory) -> None:
    # Three air-quality nodes on LoRa, same boot instant and seed: the first frame
    # of each leaves at its own phase of the 600 s interval, not all 60 s after boot.
    # At the default heap: 64 KiB on the 64-bit port, 48 KiB on the 32-bit build
    # (docs/firmware.md, "Memory").
    firsts = []
    for n in range(3):
        cfg: dict[str, Any] = {
            "role": "air_quality", "device_id": 0x00A1A100 + n, "key": KEY_HEX,
            "link": {"type": "lora"}, "radio": {"sf": 7}, "board": "unix", "jitter_s": 0,
            "air": {"pm_sensor": "none", "climate": "none", "interval_s": 600,
                    "warmup_s": 30, "sample_s": 30},
            # The stepped clock (time_scale 0): the schedule, not the host's load,
            # decides when each frame leaves.
            "bench": {"radio": {"path": "air.txt"}, "time_scale": 0, "seed": 3,
                      "start_time": HOUR_T0, "stop_after_s": 700},
        }
        node = bench_node(cfg, name=f"a{n}")
        node.start()
        assert node.wait() == 0, node.console()
        sent = [int(t) for t in SENT.findall(node.console())]
        assert len(sent) == 1, node.console()
        firsts.append(sent[0] - HOUR_T0)
    assert all(60 <= t < 660 + 30 for t in firsts), firsts
    gaps = [abs(a - b) for a, b in itertools.combinations(firsts, 2)]
    assert min(gaps) > 20, firsts

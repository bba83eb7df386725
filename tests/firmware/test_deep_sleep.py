"""The water meter in deep sleep on the unix port: a simulated ULP counts, the meter takes.

power.sleep "deep" gives the bench a simulated ULP (firmware/hal/unix_ulp.SimUlp):
it counts the pulse file into rtc.json whatever the node process does, as
the ESP32's ULP counts into RTC memory across the CPU's sleeps and resets.
The meter takes the counters' growth (firmware.ulp_counter) and saves it
with the index. A simulated week compares the index and every frame's
profile with the pulses sent; 100 kills in the hand-over check that the
index never goes back and no pulse is counted twice.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from knute.tools.rig.node import HOUR_T0, water_config
from tests.firmware.conftest import NodeFactory


def deep_config(**bench: Any) -> dict[str, Any]:
    cfg = water_config()
    cfg["power"] = {"sleep": "deep"}
    cfg["jitter_s"] = 0
    cfg["bench"].update(bench)
    return cfg


def week_pulses(seed: int, hours: int) -> tuple[str, list[int]]:
    """Pulse lines for `hours` hours, inside minutes 15..45 of each hour; the hourly sums."""
    rnd = random.Random(seed)
    lines, hourly = [], []
    for hour in range(hours):
        total = 0
        for _ in range(rnd.randint(0, 4)):
            n = rnd.choice([1, 5, 20, 60])
            if rnd.random() < 0.1:
                n = -n                                   # reverse flow
            t = HOUR_T0 + hour * 3600 + rnd.randint(900, 2700)
            lines.append((t, n))
            total += n
        hourly.append(total)
    lines.sort()
    return "".join(f"@{t} {n}\n" for t, n in lines), hourly


def test_a_simulated_week_in_deep_sleep(bench_node: NodeFactory) -> None:
    hours = 7 * 24
    text, hourly = week_pulses(5, hours)
    # The stepped clock (time_scale 0) moves only while the node sleeps: a poll
    # held up by a loaded host cannot carry a wake-up into the next hour.
    cfg = deep_config(time_scale=0, stop_after_s=hours * 3600 + 600)
    # Four frames a day: no gateway answers here, and with downlinks on a reverse-flow
    # alarm nobody acknowledges is sent again (bounded), which this week does not count.
    cfg["downlink"] = False
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text(text)
    node.start()
    assert node.wait(timeout=120) == 0, node.console()
    frames = node.frames()
    assert len(frames) == 7 * 4, node.console()
    forward = sum(n for n in hourly if n > 0)
    index = 0
    for frame in frames:
        values = frame["values"]
        end = values["profile_end_h"]                    # hour (mod 256) after the last slot
        first = (end - HOUR_T0 // 3600 - 6) % 256
        expected = [max(0, h) for h in hourly[first:first + 6]]
        assert values["profile"] == expected, (frame, node.console())
        index = values["index"]
    # Reverse pulses come off the index (never below zero), as in light sleep.
    assert index == sum(hourly) or index <= forward
    assert node.state("meter")["index_ml"] // 1000 == sum(hourly)
    rtc = json.loads((node.dir / "rtc.json").read_text())
    assert node.state("meter")["pulse"] == rtc[:2]
    assert "power day=" in node.console() and " deep=" in node.console()


def test_kills_in_the_ulp_hand_over_never_lose_or_double_a_pulse(
        bench_node: NodeFactory, upy_bits: int) -> None:
    # A pulse every simulated 30 s; each run of the node lasts until it starts
    # a state write of the meter (the hand-over: counters taken, not yet saved)
    # and is killed inside it, 100 times; the simulated ULP counts on.
    # The write pauses pause_ms before its rename and the kill comes at a random
    # point of the first kill_s after its line: inside the write, with room for
    # the latency of reading the line (40 of 40 kills left the meter's .tmp behind
    # in a trial on each build). The pause is also every boot's own first write's,
    # so it is most of a run's real time: 150 ms made the test 30 s a build.
    pause_ms, kill_s = 60, 0.045
    rnd = random.Random(9)
    events = [(HOUR_T0 + 600 + 30 * i, 1) for i in range(6000)]   # forward: the index only grows
    cfg = deep_config(time_scale=600, trace_writes=True, pause_writes_ms=pause_ms,
                      pause_writes_of=["meter"])
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text("".join(f"@{t} {n}\n" for t, n in events))
    start = HOUR_T0
    last_index = 0
    kills = 0
    while kills < 100:
        cfg["bench"]["start_time"] = start
        node.write_config(cfg)
        # A kill is a power cut: the boot-loop guard would rightly stop a node
        # that never completes a send. Wake-ups from deep sleep do not count
        # (firmware/boot.py); the bench's kills do, so the test resets it.
        (node.dir / "state" / "boots.json").unlink(missing_ok=True)
        node.lines.clear()
        node.start()
        node.wait_line(r"knute: writing meter", count=2)   # the first is the boot's own
        time.sleep(rnd.random() * kill_s)
        node.kill9()
        kills += 1
        saved = node.state("meter")
        if saved is not None:
            index = saved["index_ml"]
            assert index >= last_index, (kills, node.console())
            last_index = index
        start += 120                                       # the clock runs on between boots
    # A last run without kills: every pulse due is in the index exactly once.
    cfg["bench"].update({"start_time": start, "pause_writes_ms": 0,
                         "stop_after_s": 600})
    node.write_config(cfg)
    (node.dir / "state" / "boots.json").unlink(missing_ok=True)
    node.lines.clear()
    node.start()
    assert node.wait() == 0, node.console()
    rtc = json.loads((node.dir / "rtc.json").read_text())
    due = [n for _t, n in events[:rtc[2]]]
    assert rtc[:2] == [len(due), 0]
    assert node.state("meter")["pulse"] == rtc[:2]
    assert node.state("meter")["index_ml"] == sum(due) * 1000

"""The display role on the unix port (both builds) against a real Mosquitto.

The node's strip is the bench's file strip (firmware/hal/unix_strip.py): one
line per write with the node's simulated time, so the colours can be followed
over time. The index is published retained, as ``knute backend`` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from firmware.config_display import DISPLAY_PALETTES
from firmware.roles.display import parse_colour, scaled
from knute.tools.rig.broker import Broker
from tests.firmware.conftest import NodeFactory
from tests.firmware.test_display_role import index_doc

T_DAY = 1764676800          # 2025-12-02 12:00:00 UTC
T_DUSK = 1764709200 - 30    # 21:59:30 local (UTC+1): night begins 30 s later
TOPIC = "knute/air/index/area/sentrum"
SCALE = 10                  # simulated seconds per real second
WAIT_S = 60.0
EAQI = [parse_colour(c) for c in DISPLAY_PALETTES["eaqi"]]

Line = tuple[int, tuple[int, int, int]]


def _config(broker: Broker, start: int, **display_keys: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "area": "sentrum", "pixels": 8, "transition_s": 20, "frame_ms": 250,
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 600}}
    section.update(display_keys)
    return {"role": "display", "device_id": 0xD15, "display": section,
            "bench": {"strip": {"strip": "strip.txt"}, "time_scale": SCALE,
                      "start_time": start, "seed": 3}}


def _publish(broker: Broker, doc: dict[str, Any]) -> None:
    publish.single(TOPIC, json.dumps(doc), qos=1, retain=True, hostname=broker.host,
                   port=broker.port)


def _strip(path: Path) -> list[Line]:
    """(simulated unix s, colour of every pixel) per line; all pixels must agree."""
    out = []
    text = path.read_text()
    whole = text[:text.rfind("\n") + 1]       # a line being written is left for later
    for raw in whole.splitlines():
        parts = raw.split()
        assert len(parts) == 3, f"pixels disagree: {raw!r}"
        colour, count = parts[2].split("*")
        assert count == "8"
        out.append((int(parts[0]), parse_colour(colour)))
    return out


def _wait_colour(path: Path, colour: tuple[int, int, int], node: Any) -> list[Line]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        lines = _strip(path) if path.exists() else []
        if lines and lines[-1][1] == colour:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"the strip never showed {colour}:\n{node.console()}")


def test_strip_follows_index_changes_with_slow_transitions(
        bench_node: NodeFactory, mosquitto: Broker) -> None:
    _publish(mosquitto, index_doc(1))
    node = bench_node(_config(mosquitto, T_DAY))
    node.start()
    strip = node.dir / "strip.txt"
    lines = _wait_colour(strip, EAQI[0], node)
    assert lines[0][1] == (0, 0, 0)                     # dark at boot, then fades in
    mark = len(lines)
    _publish(mosquitto, index_doc(4))
    lines = _wait_colour(strip, EAQI[3], node)
    fade = lines[mark - 1:]
    # A cross-fade from blue to orange over transition_s (20 simulated s), not a jump.
    assert fade[0][1] == EAQI[0]
    # (Bounds with room for a loaded machine: a stalled process skips frames, and
    # the first frame of the fade may come a few simulated seconds late.)
    steps = [c for _, c in fade]
    assert len(set(steps)) >= 6
    assert fade[-1][0] - fade[1][0] >= 10
    red = [c[0] for c in steps]
    assert red == sorted(red)                           # 0x00 -> 0xe6, never back
    node.wait_line(r"display: index level=4 status=ok")
    assert "mqtt: up, following " + TOPIC in node.console()


def test_stale_index_turns_into_the_calm_pattern(bench_node: NodeFactory,
                                                 mosquitto: Broker) -> None:
    # Valid for 60 simulated seconds after boot, then no news: stale.
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T_DAY + 60))
    _publish(mosquitto, index_doc(1, valid_until=until))
    node = bench_node(_config(mosquitto, T_DAY, transition_s=10))
    node.start()
    strip = node.dir / "strip.txt"
    _wait_colour(strip, EAQI[0], node)
    deadline = time.monotonic() + WAIT_S
    late: list[Line] = []
    fade_from = 0
    while time.monotonic() < deadline and len({c for _, c in late}) < 8:
        lines = _strip(strip)
        # The fade to grey starts after the last blue frame; on a loaded machine the
        # node may notice valid_until a few simulated seconds late, never early.
        last_blue = max(i for i, (_, c) in enumerate(lines) if c == EAQI[0])
        if last_blue + 1 < len(lines):
            fade_from = lines[last_blue + 1][0]
            # after the 10 s cross-fade and a second of slack (whole seconds in the file)
            late = [line for line in lines if line[0] >= fade_from + 10 + 1]
        time.sleep(0.1)
    assert fade_from >= T_DAY + 60, node.console()     # not stale before valid_until
    colours = {c for _, c in late}
    assert len(colours) >= 8, node.console()           # it breathes
    assert all(r == g == b for r, g, b in colours)     # neutral white, never "good" blue
    assert not colours & set(EAQI)


def test_withheld_index_is_stale_and_a_fresh_one_comes_back(bench_node: NodeFactory,
                                                            mosquitto: Broker) -> None:
    _publish(mosquitto, index_doc(None, status="withheld"))
    node = bench_node(_config(mosquitto, T_DAY, transition_s=4))
    node.start()
    node.wait_line(r"display: index level=None status=withheld")
    strip = node.dir / "strip.txt"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and len(_strip(strip)) < 10:
        time.sleep(0.05)
    assert all(r == g == b for _, (r, g, b) in _strip(strip))
    _publish(mosquitto, index_doc(6))
    _wait_colour(strip, EAQI[5], node)


def test_night_dims_on_the_schedule(bench_node: NodeFactory, mosquitto: Broker) -> None:
    _publish(mosquitto, index_doc(3))
    node = bench_node(_config(mosquitto, T_DUSK, transition_s=5,
                              night={"start": "22:00", "end": "06:00", "brightness": 20}))
    node.start()
    strip = node.dir / "strip.txt"
    _wait_colour(strip, EAQI[2], node)                  # full yellow before 22:00
    lines = _wait_colour(strip, scaled(EAQI[2], 20), node)
    # The fade to the night's level starts right after the last full-yellow frame.
    last_full = max(i for i, (_, c) in enumerate(lines) if c == EAQI[2])
    assert lines[last_full + 1][0] >= T_DUSK + 30       # not before 22:00 local


def test_broker_outage_keeps_the_colour_and_the_node_comes_back(
        bench_node: NodeFactory, mosquitto: Broker) -> None:
    _publish(mosquitto, index_doc(2))
    node = bench_node(_config(mosquitto, T_DAY, transition_s=4))
    node.start()
    strip = node.dir / "strip.txt"
    _wait_colour(strip, EAQI[1], node)
    mosquitto.stop()
    node.wait_line(r"mqtt: down \(")
    shown = len(_strip(strip))
    mosquitto.start()                   # no persistence: the retained index is gone
    node.wait_line(r"mqtt: up, following", count=2)
    # Through the outage the index was still fresh: the strip never moved.
    assert {c for _, c in _strip(strip)[shown - 1:]} == {EAQI[1]}
    _publish(mosquitto, index_doc(5))
    _wait_colour(strip, EAQI[4], node)

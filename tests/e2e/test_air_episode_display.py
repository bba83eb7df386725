"""The pollution episode end to end, as far as the light sculpture's strip.

One run on real processes: the simulated episode (tools/sim/air_episode.py)
goes over Mosquitto into ``knute backend run``, which publishes the area
index retained; a ``display`` node on the unix port (both builds) follows
that topic and writes its simulated strip to a file. The episode is fed one
hour at a time, and after each hour the backend closes the test waits for
the strip to settle: on the palette colour of the hour's band, band after
band in order. Then the backend withholds the area (every PM sensor reports
a fault) and the strip turns to the stale pattern; and a second node whose
clock is past the index's ``valid_until`` shows the stale pattern too,
never a band colour.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from knute.firmware.config_display import DISPLAY_PALETTES
from knute.tools.rig.broker import Broker
from knute.tools.rig.node import BenchNode
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for
from knute.tools.sim.air_episode import HOUR_S, episode, reading
from tests.backend.test_backend_process import Backend
from tests.firmware.conftest import (  # noqa: F401  (fixtures used by this module)
    NodeFactory,
    bench_node,
    flash_lib,
    micropython_bin,
    upy_bits,
)

STATIONS = ("00002001", "00002002", "00002003")
OFFSETS = {"00002001": 1.0, "00002002": 1.1, "00002003": 0.9}
T0 = 1_767_571_200          # 2026-01-05 00:00 UTC
AREA = "knute/air/index/area/sentrum"
PALETTE = DISPLAY_PALETTES["eaqi"]
BANDS = ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor")
HOURS = 13                  # the episode's hours 0-12; hour 13 is the faulty one
INTERVAL_S = 600            # one reading per station every 10 minutes
WAIT_S = 120.0              # generous: a loaded 2-core machine


@pytest.fixture
def broker(mqtt_broker_factory: Callable[..., Broker]) -> Broker:
    return mqtt_broker_factory("mosquitto")


def write_config(tmp_path: Path, broker: Broker) -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "backend-air-display"
[store]
path = "backend.sqlite"
[water]
evaluate_every_s = 0.5
[web]
host = "127.0.0.1"
port = 0
[air]
scale = "eaqi"
pm_averaging = "1h"
[[air_area]]
name = "sentrum"
stations = {json.dumps(list(STATIONS))}
""", encoding="utf-8")
    return path


def node_config(broker: Broker, start_time: int | None) -> dict[str, Any]:
    # The node's clock runs four times the wall clock: each one-second cross-fade (the
    # same ten frames) takes a quarter of a real second; the test's seconds move it by
    # simulated seconds against the index's hour of validity.
    bench: dict[str, Any] = {"strip": {"strip": "strip.txt"}, "seed": 5, "time_scale": 4}
    if start_time is not None:
        bench["start_time"] = start_time            # else the host's clock
    return {"role": "display", "device_id": 0xD15,
            "display": {"area": "sentrum", "pixels": 8, "transition_s": 1, "frame_ms": 100,
                        "night": None,
                        "mqtt": {"host": broker.host, "port": broker.port,
                                 "keepalive_s": 600}},
            "bench": bench}


def strip(node: BenchNode) -> list[str]:
    """The colour of every whole line of the node's strip file, oldest first."""
    path = node.dir / "strip.txt"
    if not path.exists():
        return []
    text = path.read_text()
    out = []
    for raw in text[:text.rfind("\n") + 1].splitlines():
        colour, count = raw.split()[2].split("*")
        assert count == "8", f"pixels disagree: {raw!r}"
        out.append(colour)
    return out


def neutral(colour: str) -> bool:
    """A grey of the stale pattern (or dark): red, green and blue alike."""
    return colour[1:3] == colour[3:5] == colour[5:7]


def the_run() -> list[tuple[int, str, dict[str, Any]]]:
    """(episode hour, topic, reading) of the episode, then a faulty hour and a reading after it.

    In hour 13 every PM sensor reports ``pm_fault``: the backend drops their PM,
    withholds each station and so the area; the first readings of hour 14 close it.
    """
    per_hour = len(STATIONS) * HOUR_S // INTERVAL_S
    run = [(i // per_hour, topic, doc) for i, (topic, doc) in enumerate(
        episode(STATIONS, HOURS, T0, interval_s=INTERVAL_S, stuck=("00002003",),
                offsets=OFFSETS))]
    fcnt = {doc["device"]: doc["fcnt"] for _, _, doc in run}
    for hour, steps in ((13, HOUR_S // INTERVAL_S), (14, 1)):
        for step in range(steps):
            t = T0 + hour * HOUR_S + step * INTERVAL_S + 1.5
            for device in STATIONS:
                fcnt[device] += 1
                run.append((hour, f"knute/air_quality/{device}/up",
                            reading(device, fcnt[device], t, 150.0, 300.0, 55.0,
                                    alarms=("pm_fault",))))
    return run


def area_doc(watch: Subscriber, label: str) -> dict[str, Any]:
    """The backend's last area index for ``label``, once there is one."""
    docs = wait_for(lambda: [d for d in watch.docs(topic=AREA) if d["hour"] == label],
                    WAIT_S, f"the area index of {label}")
    return dict(docs[-1])


def settle(node: BenchNode, colour: str, what: str) -> None:
    """Wait for the node's strip to show ``colour`` (its last whole line)."""
    try:
        wait_for(lambda: strip(node)[-1:] == [colour], WAIT_S, f"the strip to settle on {what}")
    except WaitTimeout as err:
        raise AssertionError(f"{err}; strip ends {strip(node)[-3:]}\n{node.console()}") from None


def hour_label(hour: int) -> str:
    """The ``hour`` field of the area index the first reading of ``hour`` publishes."""
    return f"2026-01-05T{hour:02d}:00:00Z"


def test_the_strip_follows_the_episode_band_by_band(tmp_path: Path, broker: Broker,
                                                    knute_bin: Path,
                                                    bench_node: NodeFactory) -> None:  # noqa: F811
    backend = Backend(knute_bin, write_config(tmp_path, broker))
    watch = Subscriber(broker.host, broker.port, AREA)
    # The node's clock sits inside the episode (01:00): every index is fresh to it.
    node = bench_node(node_config(broker, T0 + HOUR_S), name="sculpture")
    node.start()
    node.wait_line(r"mqtt: up, following " + AREA)
    run = the_run()
    settled: list[tuple[str, str, str]] = []        # (hour, band, strip colour)
    try:
        assert watch.client is not None
        for hour in range(15):
            for _, topic, doc in [r for r in run if r[0] == hour]:
                watch.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(
                    timeout=10)
            if hour == 0 or hour == 14:
                continue
            label = hour_label(hour)
            # The first reading of this hour closed the one before it; the rest of
            # the hour's readings do not change it.
            band = area_doc(watch, label)["band"]
            assert band in BANDS, band
            colour = PALETTE[BANDS.index(band)]
            settle(node, colour, f"{band} for {label}")
            settled.append((label, band, colour))

        # Every band, in order, two hours each; the strip settled on each band's colour.
        expected = [b for b in BANDS for _ in (0, 1)] + ["extremely_poor"]
        assert [b for _, b, _ in settled] == expected
        assert all(c == PALETTE[BANDS.index(b)] for _, b, c in settled)
        # Between the settled colours only cross-fades: the palette colours the strip
        # ever showed are the bands' in order, none skipped, none out of place.
        shown = [c for c in strip(node) if c in PALETTE]
        firsts = [c for i, c in enumerate(shown) if i == 0 or shown[i - 1] != c]
        assert firsts == list(PALETTE), firsts

        # Hour 13: every PM sensor faulty, the backend withholds the area.
        withheld = area_doc(watch, hour_label(14))
        assert withheld["status"] == "withheld" and withheld["band"] is None, withheld
        node.wait_line(r"display: index level=None status=withheld")
        the_stale_pattern(node, after=PALETTE[5])
    finally:
        watch.close()
        assert backend.stop() == 0


def the_stale_pattern(node: BenchNode, after: str | None) -> None:
    """Wait for the calm pattern to breathe, and check no band colour comes after it."""
    def breathing() -> list[str]:
        lines = strip(node)
        start = max((i for i, c in enumerate(lines) if c == after), default=-1) + 1
        rest = lines[start:]
        first_grey = next((i for i, c in enumerate(rest) if neutral(c)), len(rest))
        late = rest[first_grey:]
        return late if len({c for c in late if c != "#000000"}) >= 8 else []

    late = wait_for(breathing, WAIT_S, "the stale pattern:\n" + node.console())
    assert all(neutral(c) for c in late), late      # neutral white, never a band colour
    assert not set(late) & set(PALETTE)


def test_a_node_past_valid_until_shows_the_stale_pattern(tmp_path: Path, broker: Broker,
                                                         knute_bin: Path,
                                                         bench_node: NodeFactory) -> None:  # noqa: F811
    """The backend's retained "extremely poor", seen by a node whose clock is a day later."""
    backend = Backend(knute_bin, write_config(tmp_path, broker))
    watch = Subscriber(broker.host, broker.port, AREA)
    try:
        assert watch.client is not None
        run = the_run()
        first_of_13 = [r for r in run if r[0] == 13][:len(STATIONS)]   # closes hour 12
        for _, topic, doc in [r for r in run if r[0] <= 12] + first_of_13:
            watch.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(timeout=10)
        label = hour_label(13)
        doc = area_doc(watch, label)
        assert doc["band"] == "extremely_poor" and doc["status"] != "withheld", doc
        # A fresh node with the clock of the day after: the index's valid_until passed.
        node = bench_node(node_config(broker, T0 + 86_400), name="late")
        node.start()
        node.wait_line(r"display: index level=6 status=")
        the_stale_pattern(node, after=None)
        # It is the clock that makes it stale: the same index is red to a node in time.
        timely = bench_node(node_config(broker, T0 + 12 * HOUR_S), name="timely")
        timely.start()
        settle(timely, PALETTE[5], "the timely node's extremely poor")
    finally:
        watch.close()
        assert backend.stop() == 0

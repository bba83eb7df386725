"""The display role's pure parts on CPython: config, MQTT packet reading, colours over time."""

from __future__ import annotations

import calendar
import json
from typing import Any

import pytest

from firmware.config import ConfigError, validate
from firmware.config_display import DISPLAY_PALETTES
from firmware.drivers.mqttsub import PacketReader, connect_packet, subscribe_packet
from firmware.roles import display
from firmware.roles.display import Node, blend, in_window, parse_utc, stale_colour

T_DAY = 1764676800          # 2025-12-02 12:00:00 UTC (13:00 local at +60 min)
T_NIGHT = 1764712800        # 2025-12-02 22:00:00 UTC (23:00 local)
T_DUSK = 1764709200 - 20    # 21:59:40 local: night (22:00 local) begins 20 s later


def _config(**display_keys: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"area": "sentrum", "mqtt": {"host": "127.0.0.1"}}
    section.update(display_keys)
    return {"role": "display", "device_id": 0x0D15, "display": section}


def index_doc(level: int | None, status: str = "ok", valid_until: str = "2099-01-01T00:00:00Z",
              scale: str = "eaqi") -> dict[str, Any]:
    """An area index message as docs/schema/air_index.schema.json describes it."""
    bands = [None, "good", "fair", "moderate", "poor", "very_poor", "extremely_poor"]
    band = None if level is None else bands[min(level, 6)]
    return {"scope": "area", "subject": "sentrum", "scale": scale, "level": level,
            "band": band, "colour": None, "status": status, "reasons": [],
            "hour": "2025-12-02T12:00:00Z", "updated_at": "2025-12-02T12:00:05Z",
            "valid_until": valid_until,
            "scales": {scale: {"level": level, "band": band, "colour": None,
                               "pollutants": {}}}}


# --- config ---------------------------------------------------------------

def test_config_fills_in_the_defaults() -> None:
    cfg = validate(_config())
    section = cfg["display"]
    assert section["topic"] == "knute/air/index/area/sentrum"
    assert section["palette"] == list(DISPLAY_PALETTES["eaqi"])
    assert cfg["link"]["type"] == "none" and cfg["key_bytes"] is None
    assert cfg["power"]["sleep"] == "idle"
    assert section["mqtt"]["port"] == 1883


@pytest.mark.parametrize(("change", "message"), [
    ({"area": None}, "display.area must be a name"),
    ({"area": "a/b"}, "display.area must be a name"),
    ({"colour": 3}, "display.colour is not a known key"),
    ({"palette": ["#000000"]}, "display.palette must be a list of 6 colours"),
    ({"palette": ["#000000"] * 5 + ["red"]}, "display.palette[5] must be a colour"),
    ({"scale": "aqi"}, "display.scale must be one of eaqi, no"),
    ({"pixels": 0}, "display.pixels must be an integer 1..1000"),
    ({"transition_s": -1}, "display.transition_s must be an integer"),
    ({"night": {"start": "25:00"}}, "display.night.start must be a time of day HH:MM"),
    ({"night": {"brightness": 150}}, "display.night.brightness must be an integer 0..100"),
    ({"night": {"dim": 1}}, "display.night.dim is not a known key"),
    ({"mqtt": {}}, "display.mqtt.host must be"),
    ({"mqtt": {"host": "h", "port": 0}}, "display.mqtt.port must be an integer 1..65535"),
    ({"wifi": {"password": "x"}}, "display.wifi.ssid must be"),
    ({"source": "lora"}, "display.source must be mqtt"),
])
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(_config(**change))
    assert str(err.value).startswith(message), str(err.value)


def test_no_scale_takes_four_colours_and_a_link_none_is_for_displays_only() -> None:
    assert len(validate(_config(scale="no"))["display"]["palette"]) == 4
    with pytest.raises(ConfigError, match=r"link\.type none is for the display role only"):
        validate({"role": "water_meter", "device_id": 1, "key": "00" * 16,
                  "link": {"type": "none"}})


def test_default_palette_is_distinct_and_has_no_grey() -> None:
    for palette in DISPLAY_PALETTES.values():
        colours = [display.parse_colour(c) for c in palette]
        assert len(set(colours)) == len(colours)
        # The stale pattern is neutral white: no palette colour may look like it.
        assert all(max(c) - min(c) > 60 for c in colours)


# --- small functions ------------------------------------------------------

@pytest.mark.parametrize("text", ["1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z",
                                  "2026-12-02T03:50:00Z", "2100-03-01T00:00:00.5Z"])
def test_parse_utc_agrees_with_the_standard_library(text: str) -> None:
    expected = calendar.timegm(
        (int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
         int(text[17:19]), 0, 0, 0))
    assert parse_utc(text) == expected


def test_night_window_wraps_midnight_and_blend_rounds() -> None:
    assert in_window(23 * 60, 22 * 60, 6 * 60) and in_window(5 * 60, 22 * 60, 6 * 60)
    assert not in_window(6 * 60, 22 * 60, 6 * 60) and not in_window(12 * 60, 22 * 60, 6 * 60)
    assert in_window(1 * 60, 0, 5 * 60) and not in_window(5 * 60, 0, 5 * 60)
    assert blend((0, 0, 0), (255, 100, 10), 1, 2) == (128, 50, 5)
    assert blend((200, 0, 0), (0, 0, 0), 3, 4) == (50, 0, 0)


def test_stale_pattern_breathes_in_neutral_white() -> None:
    values = [stale_colour(ms) for ms in range(0, 10_000, 500)]
    assert all(r == g == b for r, g, b in values)
    assert min(v[0] for v in values) == 25 and max(v[0] for v in values) == 127
    assert stale_colour(0) == stale_colour(10_000)


# --- MQTT packets ---------------------------------------------------------

def _publish(topic: str, payload: bytes, qos: int = 1, packet_id: int = 7) -> bytes:
    """A PUBLISH packet built by hand from MQTT 3.1.1 section 3.3 (independently of the client)."""
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += payload
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x30 | (qos << 1)]) + bytes(encoded) + body


def test_reader_resumes_after_every_byte_and_skips_oversized_packets() -> None:
    big = _publish("knute/air/index/area/x", b"y" * 600)
    one = _publish("knute/air/index/area/sentrum", json.dumps(index_doc(3)).encode())
    stream = b"\x20\x02\x00\x00" + big + one + b"\xd0\x00"
    reader = PacketReader(512)
    seen: list[tuple[int, int, bytes]] = []
    for i in range(len(stream)):
        reader.feed(stream[i:i + 1], lambda t, f, b: seen.append((t, f, bytes(b))))
    assert [(t, f) for t, f, _ in seen] == [(2, 0), (3, 2), (13, 0)]
    assert seen[1][2] == one[3:]          # 2-byte remaining length, then the body
    assert reader.oversized == 1


def test_connect_and_subscribe_packets_follow_the_standard() -> None:
    assert connect_packet("d", 60) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01d"
    assert subscribe_packet(1, "a/b") == b"\x82\x08\x00\x01\x00\x03a/b\x01"


# --- the role's colours over time ----------------------------------------

class FakeHal:
    """Clock and strip for the role on CPython: simulated time set by the test."""

    def __init__(self, t_s: int) -> None:
        self.t0 = t_s
        self.ms = 0
        self.writes: list[tuple[int, tuple[int, int, int]]] = []

    def time(self) -> int:
        return self.t0 + self.ms // 1000

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b

    def random_below(self, n: int) -> int:
        return n // 2


class FakeCtx:
    def __init__(self, cfg: dict[str, Any], hal: FakeHal) -> None:
        self.config = cfg
        self.hal = hal
        self.device_id = cfg["device_id"]
        self.lines: list[str] = []

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def _node(t_s: int = T_DAY, **display_keys: Any) -> tuple[Node, FakeHal]:
    hal = FakeHal(t_s)
    node = Node(FakeCtx(validate(_config(**display_keys)), hal))
    node.strip = _Strip(hal)
    return node, hal


class _Strip:
    def __init__(self, hal: FakeHal) -> None:
        self.hal = hal
        self.colour = (0, 0, 0)

    def fill(self, rgb: tuple[int, int, int]) -> None:
        self.colour = rgb

    def write(self) -> None:
        self.hal.writes.append((self.hal.ms, self.colour))


def _run(node: Node, hal: FakeHal, until_ms: int, step_ms: int = 50) -> None:
    while hal.ms < until_ms:
        node.show(hal.ms, hal.time())
        hal.ms += step_ms


def _send(node: Node, doc: dict[str, Any]) -> None:
    node.on_message(b"knute/air/index/area/sentrum", memoryview(json.dumps(doc).encode()))


def test_a_new_level_fades_in_over_the_transition() -> None:
    node, hal = _node(transition_s=10)
    _send(node, index_doc(1))
    _run(node, hal, 12_000)
    blue = display.parse_colour(DISPLAY_PALETTES["eaqi"][0])
    by_ms = dict(hal.writes)
    # The fade starts at the first frame (ms 0, still dark: nothing to write).
    assert hal.writes[0][0] == 50
    assert by_ms[5000] == blend((0, 0, 0), blue, 1, 2)               # halfway
    assert hal.writes[-1][1] == blue and hal.writes[-1][0] == 10_000
    # Monotonic in every channel: no flicker on the way.
    for (_, a), (_, b) in zip(hal.writes, hal.writes[1:], strict=False):
        assert all(x <= y for x, y in zip(a, b, strict=True))
    _send(node, index_doc(5))
    _run(node, hal, 30_000)
    assert hal.writes[-1][1] == display.parse_colour(DISPLAY_PALETTES["eaqi"][4])


def test_stale_index_never_stays_good() -> None:
    node, hal = _node(transition_s=2, stale_s=600)
    _send(node, index_doc(1))
    _run(node, hal, 5_000)
    assert hal.writes[-1][1] == display.parse_colour(DISPLAY_PALETTES["eaqi"][0])
    _run(node, hal, 620_000, step_ms=500)       # nothing new for stale_s
    tail = [c for _, c in hal.writes[-20:]]
    assert all(r == g == b for r, g, b in tail) and len(set(tail)) > 5


def test_valid_until_past_and_withheld_are_stale_and_bad_messages_change_nothing() -> None:
    node, hal = _node(transition_s=0)
    _send(node, index_doc(1, valid_until="2025-12-02T11:00:00Z"))   # expired on arrival
    _run(node, hal, 1000)
    assert not node.fresh(hal.time()) and all(r == g == b for _, (r, g, b) in hal.writes)
    _send(node, index_doc(None, status="withheld"))
    assert node.level is None and not node.fresh(hal.time())
    _send(node, index_doc(2))
    assert node.fresh(hal.time())
    node.on_message(b"t", memoryview(b"{not json"))
    node.on_message(b"t", memoryview(json.dumps(index_doc(9)).encode()))
    bad = index_doc(1)
    bad["scales"]["eaqi"]["level"] = True
    node.on_message(b"t", memoryview(json.dumps(bad).encode()))
    assert node.level == 2 and node.bad_messages == 3


def test_night_dims_on_schedule() -> None:
    node, hal = _node(t_s=T_DUSK, transition_s=5)
    _send(node, index_doc(3))
    _run(node, hal, 30_000)
    yellow = display.parse_colour(DISPLAY_PALETTES["eaqi"][2])
    assert (display.scaled(yellow, 100) in [c for _, c in hal.writes])
    assert hal.writes[-1][1] == display.scaled(yellow, 25)
    assert node.brightness(T_DAY) == 100 and node.brightness(T_NIGHT) == 25


def test_the_same_index_redelivered_does_not_count_as_fresh() -> None:
    # A node without a set clock (no NTP): valid_until cannot be judged, stale_s can.
    node, hal = _node(t_s=1_000_000, transition_s=0, stale_s=600)
    doc = index_doc(1, valid_until="2025-12-02T13:00:00Z")
    _send(node, doc)
    hal.ms = 500_000
    _send(node, doc)                    # the retained copy, at a reconnection
    hal.ms = 650_000
    assert not node.fresh(hal.time())
    doc["updated_at"] = "2025-12-02T13:00:05Z"
    _send(node, doc)                    # a new computation
    assert node.fresh(hal.time())

"""The backend's page in a real browser: headless Chromium against a running backend.

``knute backend run`` (a real process, against a real Mosquitto) serves the
page; readings go in through MQTT as a gateway publishes them. Chromium must
build a page that shows the configured districts with their charts, and an
alert raised by readings sent during the test must appear on it once the
backend has published it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from knute.tools.rig.broker import Broker, free_port
from knute.tools.rig.browser import Chromium, png_size
from knute.tools.rig.wait import wait_for
from tests.backend.factory import HOUR_S, T0, reading
from tests.backend.test_backend_process import Backend, Client

DAY0 = T0 - HOUR_S      # 2026-01-05 00:00 Europe/Oslo


class Dom(HTMLParser):
    """The elements of a dumped document (tag and attributes) and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """Elements ``tag`` whose attributes include ``attrs`` (``data_x`` is ``data-x``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.elements
                if t == tag and all(a.get(k) == v for k, v in wanted.items())]

    def says(self, text: str) -> bool:
        return text in " ".join("".join(self.text).split())


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    return Chromium(tmp_path / "chromium")


@pytest.fixture
def broker(mqtt_broker_factory: Callable[..., Broker]) -> Broker:
    return mqtt_broker_factory("mosquitto")


def write_config(tmp_path: Path, broker: Broker, port: int) -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "backend-web-test"
[store]
path = "backend.sqlite"
[water]
evaluate_every_s = 0.5
[web]
host = "127.0.0.1"
port = {port}
[[district]]
name = "sentrum"
inflow = ["1000a001"]
households = ["00000001", "00000002"]
[[district]]
name = "nord"
inflow = ["1000a002"]
households = ["00000003"]
""")
    return path


def api(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.loads(response.read())


def test_the_page_shows_the_districts_and_an_alert_raised_through_mqtt(
        tmp_path: Path, broker: Broker, knute_bin: Path, chromium: Chromium) -> None:
    port = free_port()
    backend = Backend(knute_bin, write_config(tmp_path, broker, port))
    client = Client(broker)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert f"web page at {url}" in backend.text()
        index: dict[str, float] = {}

        def send(device: str, k: int, litres: list[float]) -> None:
            index[device] = index.get(device, 0.0) + sum(litres)
            client.send(reading(device, k, DAY0 + k * 6 * HOUR_S, litres, index[device]))

        for k in (1, 2, 3):                 # 18 hours of a quiet district
            use = [0.0, 0.0, 0.0, 3.0, 8.0, 2.0]
            send("00000001", k, use)
            send("00000002", k, use)
            send("1000a001", k, [2 * u + 6.0 for u in use])
        wait_for(lambda: api(url, "api/summary")["readings"] == 9, 60, "9 readings stored")

        before = Dom(chromium.dump_dom(url))
        assert before.find("title") and before.says("knute · water network")
        for name in ("sentrum", "nord"):
            assert before.find("div", id=f"district-{name}"), name
        assert before.find("svg", aria_label="daily water balance of sentrum")
        assert before.find("svg", aria_label="minimum night flow of sentrum")
        assert before.find("rect", **{"class": "households"})
        assert before.says("never heard: 1000a002 00000003")
        assert before.says("Open alerts (0)") and not before.find("tr", **{"class": "alert"})

        for k in range(4, 9):               # then 30 hours of 4 L/h behind one meter
            send("00000002", k, [4.0] * 6)
        raised = wait_for(lambda: client.alert("knute/alert/continuous_flow/00000002"), 60,
                          "the continuous-flow alert on MQTT")
        assert raised["state"] == "open"

        after = Dom(chromium.dump_dom(url))
        [row] = after.find("tr", data_alert="continuous_flow", data_subject="00000002")
        assert row["class"] == "alert"
        assert after.says("Open alerts (1)")
        assert after.find("a", href="/?meter=00000002#meter")
        assert after.find("table", **{"class": "evidence"})
        # With no meter asked for, the page shows the alert's meter.
        assert after.find("svg", aria_label="hourly consumption of 00000002")
        # The readings are of January, so every meter is also silent by now (listed apart).
        [alert] = [a for a in api(url, "api/alerts") if a["alert"] != "silent"]
        assert after.find("section", id="silent") and after.says("Silent meters (3)")
        assert alert["opened_at"] == raised["opened_at"] and len(alert["evidence"]) == 24

        shot = chromium.screenshot(url, tmp_path / "page.png", 1280, 1800)
        assert png_size(shot) == (1280, 1800)
        # A drawn page of charts and tables; an empty one compresses to a few kB.
        assert shot.stat().st_size > 40_000
    finally:
        client.close()
        assert backend.stop() == 0


def test_a_web_port_in_use_stops_the_backend_with_one_line_naming_it(
        tmp_path: Path, broker: Broker, knute_bin: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, broker, port)
        result = subprocess.run([str(knute_bin), "backend", "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"knute backend: {config}: web.port: cannot serve the web page on "
                           f"127.0.0.1:{port}: ")

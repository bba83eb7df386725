"""The backend's web page and its JSON endpoints, without a broker or a browser.

A district of two households and an inlet meter is fed through the backend's
core; the documents behind the page must add up (loss = inflow − outflow −
households, with the share of estimated hours said), and the page must show
what they say: estimated hours marked, open alerts with their evidence,
silent meters. Every test runs on both stores (SQLite and PostgreSQL, the
``store_factory`` of tests/backend/conftest.py).
tests/backend/test_web_browser.py loads it in Chromium.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from knute.backend.config import Config, ConfigError, District, load
from knute.backend.service import Backend, district_balances
from knute.backend.store import SqlStore
from knute.backend.web import WebApp, WebServer
from knute.backend.webview import View
from tests.backend.conftest import StoreFactory
from tests.backend.factory import HOUR_S, T0, reading, topic

DAY0 = T0 - HOUR_S          # 2026-0105 00:00 Europe/Oslo
LEAK_L_H = 10.0


def household_use(device: str, hour: int) -> float:
    """Litres in the hour starting at ``hour``: nothing at night, some use by day."""
    local = (hour - DAY0) // HOUR_S % 24
    if local < 6:
        return 0.0
    return float((local * (3 if device.endswith("1") else 5)) % 13)


class City:
    """A backend fed with one district's readings; ``send`` passes one reading through."""

    def __init__(self, tmp_path: Path, stores: StoreFactory) -> None:
        self.stores = stores
        self.store: SqlStore = stores.new()
        where = stores.where[id(self.store)]
        self.config = Config(
            path=tmp_path / "backend.toml",
            store_path=Path(where) if stores.kind == "sqlite" else tmp_path / "unused.sqlite",
            store_url="" if stores.kind == "sqlite" else where,
            districts=(District("sentrum", ("1000a001",), (), ("00000001", "00000002"), 2),
                       District("nord", ("1000a002",), (), ("00000003",), 1)))
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.backend = Backend(self.config, self.store, self.publish)
        self.index: dict[str, float] = {}
        self.fcnt: dict[str, int] = {}

    def publish(self, topic: str, document: Mapping[str, Any]) -> None:
        self.published.append((topic, dict(document)))

    def send(self, device: str, last_end: int, litres: list[float]) -> None:
        self.index[device] = self.index.get(device, 0.0) + sum(litres)
        self.fcnt[device] = self.fcnt.get(device, 0) + 1
        doc = reading(device, self.fcnt[device], last_end, litres, self.index[device])
        assert self.backend.handle(topic(doc), json.dumps(doc).encode()) in ("stored", "late")

    def days(self, days: int, skip: frozenset[tuple[str, int]] = frozenset()) -> None:
        """``days`` local days of six-hour readings; ``skip`` (device, k) readings are lost."""
        for k in range(1, days * 4 + 1):
            end = DAY0 + k * 6 * HOUR_S
            hours = [end - (6 - i) * HOUR_S for i in range(6)]
            inlet = [LEAK_L_H] * 6
            for device in ("00000001", "00000002"):
                litres = [household_use(device, h) for h in hours]
                inlet = [a + b for a, b in zip(inlet, litres, strict=True)]
                if (device, k) in skip:
                    self.index[device] = self.index.get(device, 0.0) + sum(litres)
                    continue
                self.send(device, end, litres)
            self.send("1000a001", end, inlet)

    def app(self, now: float | None = None) -> WebApp:
        return WebApp(self.config, self.stores.reopen(self.store),
                      clock=lambda: now if now is not None else DAY0 + 2 * 86400)


def get(app: WebApp, target: str) -> Any:
    status, content_type, body = app.answer(target)
    assert status == 200 and content_type == "application/json", body
    return json.loads(body)


def page(app: WebApp, target: str = "/") -> str:
    status, content_type, body = app.answer(target)
    assert status == 200 and content_type.startswith("text/html"), body
    return body.decode()


@pytest.fixture
def city(tmp_path: Path, store_factory: StoreFactory) -> Iterator[City]:
    yield City(tmp_path, store_factory)       # the factory closes its stores


def test_the_daily_balance_adds_up_and_says_how_much_of_it_is_estimated(city: City) -> None:
    city.days(2, skip=frozenset({("00000002", 3)}))      # six hours of one meter estimated
    district = get(city.app(), "/api/districts/sentrum")
    assert [d["date"] for d in district["days"]] == ["2026-01-05", "2026-01-06"]
    first, second = district["days"]
    for day in (first, second):
        assert day["hours"] == day["bulk_hours"] == 24
        assert day["loss_l"] == pytest.approx(24 * LEAK_L_H)    # the index makes the total exact
        assert day["inflow_l"] - day["outflow_l"] - day["households_l"] == pytest.approx(
            day["loss_l"])
    assert first["estimated"] == pytest.approx(6 / 48) and not first["complete"]
    assert second["estimated"] == 0 and second["measured"] == 1 and second["complete"]
    # A day the newest reading leaves unfinished is never complete, even when its hours are.
    city.send("00000001", DAY0 + 49 * HOUR_S, [0.0])
    city.send("00000002", DAY0 + 49 * HOUR_S, [0.0])
    city.send("1000a001", DAY0 + 49 * HOUR_S, [LEAK_L_H])
    today = get(city.app(), "/api/districts/sentrum")["days"][-1]
    assert today["date"] == "2026-01-07" and today["hours"] == 1
    assert today["measured"] == 1 and not today["complete"]
    # The night flow: households use nothing 02-04, so the minimum is the leak.
    nights = {n["night"]: n for n in district["nights"]}
    assert nights["2026-01-06"]["mnf_l_h"] == LEAK_L_H
    assert nights["2026-01-06"]["leakage_l_h"] == pytest.approx(LEAK_L_H - 2 * 1.7, abs=0.05)
    assert district["allowance_l_h"] == pytest.approx(3.4)
    assert district["unheard"] == []
    nord = get(city.app(), "/api/districts/nord")
    assert nord["days"] == [] and nord["unheard"] == ["1000a002", "00000003"]
    assert [d["name"] for d in get(city.app(), "/api/districts")] == ["sentrum", "nord"]
    html = page(city.app())
    assert 'id="district-sentrum"' in html and 'id="district-nord"' in html
    assert 'aria-label="daily water balance of sentrum"' in html
    assert 'aria-label="minimum night flow of sentrum"' in html
    assert "never heard: 1000a002 00000003" in html


def test_one_meters_hours_mark_the_estimated_ones(city: City) -> None:
    city.days(2, skip=frozenset({("00000002", 3)}))
    meter = get(city.app(), "/api/meters/00000002")
    qualities = [h["quality"] for h in meter["hours"]]
    assert len(qualities) == 48 and qualities.count("estimated") == 6
    assert meter["estimated_hours"] == 6 and meter["missing_hours"] == 0
    assert meter["measured_hours"] == 42 and meter["district"] == "sentrum"
    assert meter["total_l"] == pytest.approx(city.index["00000002"])
    html = page(city.app(), "/?meter=00000002")
    chart = html.split('aria-label="hourly consumption of 00000002"', 1)[1].split("</svg>")[0]
    hatched = re.findall(r'<rect class="estimated"[^>]*fill="url\(#hatch-\d+\)"', chart)
    assert len(hatched) == 6
    assert len(re.findall(r'<rect class="measured"', chart)) == 42
    assert "6 estimated" in html


def test_an_open_alert_is_shown_with_the_hours_that_raised_it(city: City) -> None:
    assert "no open alerts" in page(city.app(), "/")
    city.days(1)
    assert 'data-subject="00000003"' not in page(city.app(), "/")
    for k in range(1, 6):                 # 30 hours of 4 L/h: continuous flow
        city.send("00000003", DAY0 + 86400 + k * 6 * HOUR_S, [4.0] * 6)
    alerts = get(city.app(), "/api/alerts")
    [alert] = [a for a in alerts if a["subject"] == "00000003"]
    assert alert["alert"] == "continuous_flow" and len(alert["evidence"]) == 24
    published = [d for t, d in city.published if t == "knute/alert/continuous_flow/00000003"]
    assert published[-1]["opened_at"] == alert["opened_at"]
    html = page(city.app(), "/")
    row = re.search(r'<tr class="alert" data-alert="continuous_flow" '
                    r'data-subject="00000003">(.*?)</tr>(?=<tr class="alert"|</table></section>)',
                    html)
    assert row is not None
    evidence = row.group(1).split('<table class="evidence">', 1)[1]
    assert evidence.count("<tr>") == 25       # a head and the 24 hours
    assert 'href="/?meter=00000003#meter"' in row.group(1)
    # The page shows the meter of the newest open alert when none is asked for.
    assert 'aria-label="hourly consumption of 00000003"' in html
    assert get(city.app(), "/api/alerts?state=closed") == []
    assert len(get(city.app(), "/api/alerts?state=all")) == len(alerts)


def test_silent_meters_are_listed_longest_silent_first(city: City) -> None:
    city.days(1)
    city.send("00000003", DAY0 + 6 * HOUR_S, [1.0] * 6)
    now = DAY0 + 86400 + 2 * 6 * HOUR_S + 60     # 2 intervals after the district's last
    silent = get(city.app(now), "/api/silent")
    assert [m["device"] for m in silent] == ["00000003"]
    assert silent[0]["intervals"] == pytest.approx(5.0, abs=0.01)
    later = get(city.app(now + 6 * HOUR_S), "/api/silent")
    assert [m["device"] for m in later] == ["00000003", "00000001", "00000002", "1000a001"]
    html = page(city.app(now))
    section = html.split('<section id="silent">', 1)[1]
    assert "Silent meters (1)" in section and ">00000003</a>" in section
    summary = get(city.app(now), "/api/summary")
    assert summary["silent_meters"] == 1 and summary["meters"] == 4
    assert summary["readings"] == 4 * 3 + 1 and summary["districts"] == 2


@pytest.mark.parametrize(("target", "status", "says"), [
    ("/api/meters/XYZ", 400, "is not a device id"),
    ("/api/meters/0000beef", 404, "meter 0000beef has not been heard"),
    ("/api/districts/nowhere", 404, "no district named 'nowhere'"),
    ("/api/districts?days=0", 400, "days: expected 1-366"),
    ("/api/alerts?state=maybe", 400, "state: expected open, closed or all"),
    ("/?meter=../etc", 400, "is not a device id"),
    ("/nothing", 404, "no page at /nothing"),
])
def test_a_bad_request_is_one_line_of_json(city: City, target: str, status: int,
                                           says: str) -> None:
    code, content_type, body = city.app().answer(target)
    assert code == status and content_type == "application/json"
    error = json.loads(body)["error"]
    assert says in error and "\n" not in error


def test_the_page_escapes_what_comes_from_the_store(city: City) -> None:
    city.store.put_alert("continuous_flow/<b>x</b>", {
        "alert": "continuous_flow", "subject": "<script>x</script>", "subject_kind": "meter",
        "state": "open", "opened_at": "2026-01-05T00:00:00Z", "value": 1.0, "unit": "h",
        "rule": "<img src=x>", "evidence": [{"hour": "2026-01-05T00:00:00Z", "litres": 1.0,
                                             "quality": "<i>"}]})
    html = page(city.app(), "/")
    assert "<script>x</script>" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html


def test_the_server_serves_both_and_a_taken_port_is_one_error_naming_web_port(
        city: City) -> None:
    city.days(1)
    config = Config(**{**city.config.__dict__, "web_port": 0})
    server = WebServer(config)
    url = server.start()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/html")
            assert "sentrum" in response.read().decode()
        with urllib.request.urlopen(url + "api/summary", timeout=30) as response:
            assert json.loads(response.read())["readings"] == 12
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "api/meters/0000beef", timeout=30)
        assert missing.value.code == 404
        port = int(url.rsplit(":", 1)[1].strip("/"))
        taken = WebServer(Config(**{**city.config.__dict__, "web_port": port}))
        with pytest.raises(ConfigError) as error:
            taken.start()
        assert str(error.value).startswith(f"{config.path}: web.port: cannot serve the web "
                                           f"page on 127.0.0.1:{port}: ")
    finally:
        server.stop()


def test_web_keys_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "backend.toml"
    path.write_text('[web]\nhost = "0.0.0.0"\nport = 8099\ndays = 30\n')
    config = load(path)
    assert (config.web_enabled, config.web_host, config.web_port, config.web_days) == (
        True, "0.0.0.0", 8099, 30)
    path.write_text("[web]\nenabled = false\n")
    assert not load(path).web_enabled
    for text, says in (("port = 70000", "web.port: expected 0-65535"),
                       ("port = true", "web.port: expected int, got True"),
                       ("enabled = 1", "web.enabled: expected bool, got 1"),
                       ("days = 0", "web.days: expected 1-366"),
                       ("colour = 1", "unknown key web.colour")):
        path.write_text(f"[web]\n{text}\n")
        with pytest.raises(ConfigError) as error:
            load(path)
        assert str(error.value).startswith(f"{path}: ") and says in str(error.value), text


def test_the_pages_balances_are_the_hour_by_hour_rule_summed_by_the_store(city: City) -> None:
    # Estimated hours (a lost reading), a household missing for a day, an inlet
    # missing for six hours: every share and total as analytics.district_balance says.
    city.days(2, skip=frozenset({("00000002", 3), ("00000001", 5), ("00000001", 6),
                                 ("00000001", 7), ("00000001", 8)}))
    with city.store.transaction():
        city.store._x("DELETE FROM hours WHERE device='1000a001' AND hour>=? AND hour<?",
                      (DAY0 + 30 * HOUR_S, DAY0 + 36 * HOUR_S))
    view = View(city.config, city.store)
    for district in city.config.districts:
        start, end = DAY0 - 2 * HOUR_S, DAY0 + 50 * HOUR_S
        fast = view.balances(district, start, end)
        rule = district_balances(city.store, district, start, end)
        assert len(fast) == len(rule) == 52
        for a, b in zip(fast, rule, strict=True):
            assert a.hour == b.hour and a.complete == b.complete, (a, b)
            for name in ("inflow_l", "outflow_l", "households_l", "loss_l", "measured",
                         "estimated", "missing"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None) and (x is None or x == pytest.approx(y)), (
                    name, a, b)
    shares = {(b.measured, b.estimated, b.missing) for b in view.balances(
        city.config.districts[0], DAY0, DAY0 + 48 * HOUR_S)}
    assert {(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5)} <= shares

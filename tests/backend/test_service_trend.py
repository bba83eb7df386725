"""The trend of a district's minimum night flow raises ``mnf_trend``, numbers by hand.

A district of two households and an inlet, on both stores. The households use
nothing in the night window (02:00-04:00 Oslo, 01:00-03:00 UTC in January),
so each night's MNF is what the pipes lose: 20 L/h on the first night and
6 L/h more every night after. The allowance is 2 properties x 1.7 L/h =
3.4 L/h, so the MNF leakage of night i is 16.6 + 6 i L/h: an exact line of
slope 6 L/h per day. The trend is fitted from the 7th night on (i = 6), over
the nights so far (up to 14): its rise, slope x days spanned, is 6 i L/h:
36, 42, 48, then 54 on night 9 (above 50, the first) and 60 on night 10 (the
second): the alert opens at the end of night 10's window, 2026-01-15 03:00 UTC.
"""

from __future__ import annotations

import json
from pathlib import Path

from knute.backend.config import Config, District
from knute.backend.service import Backend
from knute.backend.web import WebApp
from tests.backend.conftest import StoreFactory
from tests.backend.factory import HOUR_S, T0, reading, topic
from tests.backend.test_service_leaks import Published

HOUSES = ("00000001", "00000002")
INLET = "1000a001"
HOUSE = [3, 0, 0, 1, 0, 0, 2, 10, 20, 15, 10, 10, 12, 10, 8, 8, 10, 15, 20, 20, 15, 10, 8, 5]


def _run(tmp_path: Path, store_factory: StoreFactory, leak_l_h: list[float]
         ) -> tuple[Backend, Published]:
    """Feed ``len(leak_l_h)`` days, night ``d`` losing ``leak_l_h[d]`` L/h in the pipes."""
    config = Config(path=tmp_path / "backend.toml",
                    districts=(District("sentrum", (INLET,), (), HOUSES, 2),))
    published = Published()
    core = Backend(config, store_factory.new(), published)
    index = dict.fromkeys((*HOUSES, INLET), 0.0)
    for block in range(len(leak_l_h) * 4):
        hours = range(block * 6, (block + 1) * 6)
        end = T0 + (block + 1) * 6 * HOUR_S
        docs = []
        for device in HOUSES:
            litres = [float(HOUSE[h % 24]) for h in hours]
            index[device] += sum(litres)
            docs.append(reading(device, block + 1, end, litres, index[device]))
        inlet = [2.0 * HOUSE[h % 24] + leak_l_h[h // 24] for h in hours]
        index[INLET] += sum(inlet)
        docs.append(reading(INLET, block + 1, end, inlet, index[INLET]))
        for doc in docs:
            core.handle(topic(doc), json.dumps(doc).encode())
        core.evaluate(end + 60)
    return core, published


def test_a_rising_night_flow_opens_mnf_trend_with_its_nights(
        tmp_path: Path, store_factory: StoreFactory) -> None:
    core, published = _run(tmp_path, store_factory, [20.0 + 6 * d for d in range(11)])
    trend = published.on("mnf_trend")
    assert [d["state"] for d in trend] == ["open"]
    alert = trend[0]
    assert alert["subject"] == "sentrum" and alert["opened_at"] == "2026-01-15T03:00:00Z"
    assert alert["value"] == 60.0
    assert alert["threshold"]["open_above"] == 50.0
    nights, fit = alert["evidence"][:-1], alert["evidence"][-1]
    assert [n["night"] for n in nights] == [f"2026-01-{5 + i:02d}" for i in range(11)]
    assert [n["mnf_l_h"] for n in nights] == [20.0 + 6 * i for i in range(11)]
    assert {n["allowance_l_h"] for n in nights} == {3.4}
    assert [n["leakage_l_h"] for n in nights] == [round(16.6 + 6 * i, 1) for i in range(11)]
    assert fit == {"slope_l_h_per_day": 6.0, "rise_l_h": 60.0}
    # Published once on its topic; the page lists it open with its nights and fit.
    assert [t for t, d in published.messages if d["alert"] == "mnf_trend"] == [
        "knute/alert/mnf_trend/sentrum"]
    app = WebApp(core.config, store_factory.reopen(core.store), clock=lambda: T0 + 12 * 86400)
    status, _, body = app.answer("/api/alerts")
    shown = [a for a in json.loads(body) if a["alert"] == "mnf_trend"]
    assert status == 200 and shown == [{k: v for k, v in alert.items() if k != "_state"}]
    status, _, page = app.answer("/")
    html = page.decode()
    assert status == 200 and "mnf_trend" in html and "slope_l_h_per_day" in html
    assert "2026-01-15" in html and "76.6" in html
    app.store.close()


def test_a_high_but_steady_night_flow_is_no_trend(
        tmp_path: Path, store_factory: StoreFactory) -> None:
    # 90 L/h every night: MNF leakage 86.6 L/h, below district_leak's 100 and flat.
    _, published = _run(tmp_path, store_factory, [90.0] * 11)
    assert published.on("mnf_trend") == []
    assert published.on("district_leak") == []


def test_a_slower_rise_stays_below_the_level(tmp_path: Path,
                                             store_factory: StoreFactory) -> None:
    # 3 L/h per day: the rise over the 11 nights is 30 L/h, below 50.
    _, published = _run(tmp_path, store_factory, [20.0 + 3 * d for d in range(11)])
    assert published.on("mnf_trend") == []

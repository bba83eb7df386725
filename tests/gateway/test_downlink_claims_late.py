"""Two gateways' claims over a real Mosquitto when both get to an uplink late (a loaded
box: the uplink was heard well over ``gather_s`` before the claim goes out): exactly one
of them answers. Claims were gathered until ``gather_s`` after the uplink was heard, so a
late gateway decided at once on what it had heard so far, and two late gateways both
answered (tests/e2e/test_downlink_two_gateways.py, under load)."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import pytest

from knute.gateway import downlinks as dlq
from knute.gateway.config import MqttConfig
from knute.gateway.downlink_city import DownlinkCity, on_time, rank
from knute.gateway.registry import Registry
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker

DEV = 0x1234
KEY = bytes(range(16))
GATHER_S = 2.0        # margins of ~1 s for a loaded machine: claims 0.03 s apart count
                      # together (within GATHER_S / 2) and reach each other in time
LATE_S = 4.0          # the uplink was heard this long before the claim goes out


def _city(tmp_path: Path, broker: Broker, name: str, index: int,
          gateways: int | None = None) -> DownlinkCity:
    path = tmp_path / f"{name}.db"
    reg = Registry(str(path))
    reg.add(DEV, "water_meter", KEY)
    reg.close()
    store = dlq.DownlinkStore(str(path), stride=(index, gateways or 2))
    city = DownlinkCity(MqttConfig(host=broker.host, port=broker.port, prefix="late"), store,
                        gateway_id=name, index=index, gather_s=GATHER_S,
                        client_id=f"late-{name}", gateways=gateways)
    city.start()
    return city


def _subscribed(city: DownlinkCity) -> bool:
    return city.subscribed


def _elect_both(cities: dict[str, DownlinkCity], fcnt: int, snr: dict[str, float],
                stagger_s: float) -> dict[str, bool]:
    """Both gateways elect for uplink ``fcnt``, heard LATE_S ago, gw-b ``stagger_s``
    after gw-a; who answers."""
    heard = time.time() - LATE_S
    won: dict[str, bool] = {}

    def run(name: str, delay: float) -> None:
        time.sleep(delay)
        won[name] = cities[name].elect(DEV, fcnt, snr[name], True, heard)

    threads = [threading.Thread(target=run, args=(name, delay))
               for name, delay in (("gw-a", 0.0), ("gw-b", stagger_s))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return won


@pytest.mark.parametrize("gateways", [None, 2, 3])
def test_two_late_gateways_answer_an_uplink_once(tmp_path: Path, mosquitto: Broker,
                                                 gateways: int | None) -> None:
    # ``gateways`` None: each election waits out its gather time. 2: once both claims are
    # in, no claim can come that changes the decision, and a gateway decides without
    # waiting (all_claimed). 3: the third index never claims, so the whole wait. The
    # decisions are the same in all three.
    cities = {name: _city(tmp_path, mosquitto, name, index, gateways)
              for index, name in enumerate(("gw-a", "gw-b"))}
    try:
        for city in cities.values():
            wait_for(partial(_subscribed, city), 30, "the claims subscribed")
        # Claims close together (within gather_s / 2): both count at both, the better
        # SNR answers, also when it claimed second.
        assert _elect_both(cities, 1, {"gw-a": 1.0, "gw-b": 8.0}, 0.03) == {
            "gw-a": False, "gw-b": True}
        assert _elect_both(cities, 2, {"gw-a": 8.0, "gw-b": 1.0}, 0.03) == {
            "gw-a": True, "gw-b": False}
        # Far apart: the later claim is out, at the gateway that made it too, however
        # good its SNR.
        assert _elect_both(cities, 3, {"gw-a": 1.0, "gw-b": 8.0}, GATHER_S * 0.8) == {
            "gw-a": True, "gw-b": False}
        assert cities["gw-a"].figures["claims_heard"] == 3
        # gw-b claims after gw-a: it holds both claims within its gather time (what
        # the decisions above rest on); gw-a only when gw-b's claim came in time.
        assert cities["gw-b"].figures["all_claimed"] == (3 if gateways == 2 else 0)
        assert cities["gw-a"].figures["all_claimed"] <= cities["gw-b"].figures["all_claimed"]
    finally:
        for city in cities.values():
            city.stop()
            city.store.close()


def test_claims_count_within_half_the_gather_time_of_the_first() -> None:
    claims = {g: rank(True, snr, i, g) for i, (g, snr) in enumerate(
        (("a", 1.0), ("b", 9.0), ("c", 5.0)))}
    assert on_time(claims, {"a": 10.0, "b": 10.1, "c": 10.2}, 0.3) == {
        "a": claims["a"], "b": claims["b"]}
    assert on_time(claims, {"a": 10.0, "b": 10.15, "c": 10.16}, 0.3) == {
        "a": claims["a"], "b": claims["b"]}
    assert on_time(claims, {}, 0.3) == claims
    # A claim without its time (a message that had none) counts as the first one's.
    assert on_time(claims, {"a": 10.0, "c": 11.0}, 0.3) == {
        "a": claims["a"], "b": claims["b"]}

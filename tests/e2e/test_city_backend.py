"""The city end to end: ``knute simulate --city`` frames through a real gateway and Mosquitto
into ``knute backend run``, which raises the planted household leak itself.

Two districts of 20 households run at 7,200 simulated seconds a second from
eight days ago (``--start``: the gateway resolves a profile's hours against
its own clock, so the simulated hours stay behind it). A 500 L/h leak starts
behind one household's meter a simulated day in. Its frames go over the
simulator's pty to the gateway's serial source, are verified and spooled, and
are published to Mosquitto; the backend stores them, rebuilds the hourly
series and opens ``steady_flow`` for that meter, retained on MQTT with the
leak's hours as evidence. The bulk meters are left out: a Modbus poll is
stamped with the gateway's clock, not the simulated one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from knute.tools.rig.backend import BackendProcess
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for
from knute.tools.sim.city import city_from_args
from tests.conftest import Broker

SPEED = 7200.0
RUN_S = 75.0           # 150 simulated hours: the leak's day and more than a day after it
SEED = 4


def _gateway_config(workdir: Path, broker: Broker, link: Path, status_socket: str) -> str:
    return f"""
[gateway]
id = "city"
data_dir = "{workdir}"
registry = "registry.db"

[spool]
path = "spool.db"

[status]
socket = "{status_socket}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
prefix = "knute"

[[serial]]
name = "city-line"
url = "{link}"
reopen_min_s = 0.2
reopen_max_s = 1
"""


def _backend_config(broker: Broker, districts: list[Any]) -> str:
    tables = "".join(
        f'\n[[district]]\nname = "{d.name}"\ninflow = ["{d.inflow}"]\n'
        + (f'outflow = ["{d.outflow}"]\n' if d.outflow else "")
        + f"households = {json.dumps(list(d.households))}\n" for d in districts)
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "knute-backend-city"
prefix = "knute"

[store]
path = "backend.sqlite"

[water]
evaluate_every_s = 5

[web]
port = 0
{tables}"""


def test_a_household_leak_planted_in_the_city_is_raised_by_the_backend(
        knute_bin: Path, mosquitto: Broker, tmp_path: Path) -> None:
    start = float(int(time.time() - 8 * 86400) // 3600 * 3600)
    args = argparse.Namespace(districts=2, households=20, leaks="500", leak_start=None)
    city = city_from_args(args, SEED, start)
    leak = next(x for x in city.leaks if x.where == "household")
    assert leak.size_l_h == 500.0
    backend = BackendProcess(tmp_path / "backend")
    backend.write_config(_backend_config(mosquitto, city.districts))
    alerts = Subscriber(mosquitto.host, mosquitto.port, "knute/alert/#",
                        client_id="city-alerts")
    gw_dir = tmp_path / "gateway"
    gw_dir.mkdir()
    gateway = GatewayProcess(gw_dir)
    link = tmp_path / "radio"
    sim: subprocess.Popen[str] | None = None
    try:
        backend.start()
        sim = subprocess.Popen(
            [str(knute_bin), "simulate", "--city", "--districts", "2", "--households", "20",
             "--leaks", "500", "--seed", str(SEED), "--start", str(start),
             "--speed", str(SPEED), "--for", str(RUN_S), "--serial-pty", str(link),
             "--registry", str(gw_dir / "registry.db"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: link.exists() or sim.poll() is not None, 30, "the simulator's pty")
        assert sim.poll() is None, sim.communicate()
        gateway.write_config(_gateway_config(gw_dir, mosquitto, link, gateway.status_socket))
        gateway.start()

        def steady() -> list[dict[str, Any]]:
            return [m.doc() for m in alerts.messages(topic=f"knute/alert/steady_flow/"
                                                                  f"{leak.subject}")
                    if m.doc()["state"] == "open"]

        try:
            opened = wait_for(steady, RUN_S + 60, "the backend's steady_flow alert")[0]
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; alerts {[m.topic for m in alerts.messages()]}\n"
                                 + backend.log_text()[-2000:]
                                 + gateway.log_tail()) from None
        summary = backend.summary()
    finally:
        if sim is not None:
            sim.kill()
            sim.communicate()
        gateway.stop(timeout=20)
        gateway.close()
        backend.stop()
        alerts.close()
    # The backend's own alert: the leak's hours as evidence, each with the leak's water.
    assert opened["subject"] == leak.subject and opened["alert"] == "steady_flow"
    hours = opened["evidence"]
    assert len(hours) >= 24 and all(h["litres"] >= leak.size_l_h for h in hours), hours
    first = min(time.mktime(time.strptime(h["hour"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
                for h in hours)
    assert first >= leak.start - 3600, (hours[0], leak.start)
    # No household without a leak raised one in the same time, and every reading was valid.
    flows = {m.topic.split("/")[-1] for m in alerts.messages()
             if m.topic.startswith("knute/alert/steady_flow/") and m.doc()["state"] == "open"}
    assert flows == {leak.subject}, flows
    assert summary["counters"].get("bad", 0) == 0 and summary["readings"] > 40 * 4

"""The city end to end: ``knute simulate --city`` frames through a real gateway and Mosquitto
into ``knute backend run``, with the districts' bulk meters polled over Modbus TCP from
``knute modbus-sim``; the backend raises the planted household leak and the planted pipe
leak itself, and the leak-free district raises nothing.

Two districts of 20 households run at 7,200 simulated seconds a second from
seven or eight days ago (``--start``: the backend evaluates its districts as of the wall
clock, so the simulated hours must stay behind it). The simulator starts
``knute modbus-sim`` with the bulk meters (units 1..3) on the same simulated
clock, and the gateway runs on it too (``[gateway] clock_speed``): its serial
source stamps the households' frames with simulated time. The city's clock is
held at ``--start`` until every process is up (the gateway's sources open, every
bulk meter answering, the simulator's pty and modbus-sim listening): then the
test writes the clock file the gateway (``[gateway] clock_file``) and the
simulator (``--clock-file``) wait on, and both clocks run from the same
instant, however long a loaded machine took to start them. The bulk meters
keep their own time (``bulk_water_meter``'s ``[clock]``, whole simulated
seconds, read in the same answer as the totaliser), so the gateway stamps a
poll with the time the meter read its totaliser at, off by at most half a
second of the meter's clock, not by half the poll's round trip (at 7,200
times the clock each millisecond of that is 3.6 simulated seconds of flow):
every allowance for the polls' timing below comes from that resolution.
Every leak is in ``dma01``
(``--leak-district``): a 500 L/h leak behind one household's meter and a
500 L/h leak in the mains between the inlet meter and the households, both
starting after three quiet nights. ``dma02`` (an inlet and an outlet meter) has none.

The backend must open ``steady_flow`` for the leaking household, and for
``dma01`` ``district_leak`` (minimum night flow) and ``district_loss_rise``
(the night balance against the quiet nights: the pipe leak's 500 L/h and not
the household's, which its own meter counts); nothing opens for ``dma02``.
Its hourly balances are checked against the city model and against the
household readings the broker carried (the measured and missing shares).
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from knute.backend import config as backend_config
from knute.backend.analytics import local_hour
from knute.backend.hours import HOUR_S, parse_utc
from knute.backend.queries import district_balances
from knute.backend.store import open_store
from knute.tools.rig.backend import BackendProcess
from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import WaitTimeout, wait_for
from knute.tools.sim.city import DAY_S, City, city_from_args
from knute.tools.sim.city_nodes import bulk_units
from tests.conftest import Broker, free_port

SPEED = 7200.0
RUN_S = 80.0           # 160 simulated hours: three quiet nights, the leak, two nights more
SEED = 4
LEAK_L_H = 500.0
POLL_S = 0.25          # two polls a simulated hour
START_H = 20           # the run starts 20:00 UTC: the first night (01-03 UTC) is 5 h in
LEAK_AFTER_H = 56      # 04:00 UTC after the third night
RELEASE_S = 0.5        # the clock file's wall time is this far ahead when it is written
METER_CLOCK_S = 1.0    # bulk_water_meter's [clock]: whole seconds, rounded by the meter


def _city(start: float) -> City:
    args = argparse.Namespace(districts=2, households=20, leaks=f"{LEAK_L_H:g}",
                              leak_start=start + LEAK_AFTER_H * HOUR_S, leak_district="dma01")
    return city_from_args(args, SEED, start)


def _gateway_config(workdir: Path, broker: Broker, link: Path, status_socket: str,
                    clock_file: Path, modbus: str, city: City) -> str:
    devices = "".join(f"""
[[modbus.device]]
bus = "city-bulk"
unit_id = {unit}
device_id = "{device}"
map = "bulk_water_meter"
interval_s = {POLL_S}
""" for unit, _, _, device in bulk_units(city))
    return f"""
[gateway]
id = "city"
data_dir = "{workdir}"
registry = "registry.db"
clock_speed = {SPEED}
clock_start = {city.start}
clock_file = "{clock_file}"

[spool]
path = "spool.db"

{status_and_broker(status_socket, broker.host, broker.port, "knute")}

[[serial]]
name = "city-line"
url = "{link}"
reopen_min_s = 0.2
reopen_max_s = 1

[modbus]
state_file = "modbus-state.json"

[[modbus.bus]]
name = "city-bulk"
tcp = "{modbus}"
timeout_s = 2
{devices}"""


def _backend_config(broker: Broker, districts: Sequence[Any]) -> str:
    tables = "".join(
        f'\n[[district]]\nname = "{d.name}"\ninflow = ["{d.inflow}"]\n'
        + (f'outflow = ["{d.outflow}"]\n' if d.outflow else "")
        + f"households = {json.dumps(list(d.households))}\n" for d in districts)
    # The readings' time is days behind the wall clock the backend evaluates on:
    # no meter is silent for that. A bulk meter's hour boundary is interpolated
    # between polls half an hour apart, across the change of flow at the
    # boundary (a poll's time is the meter's own, to half a second): a night's
    # loss moves by some L/h from night to night, so a rise counts from 20 L/h
    # here (5 by default, tuned on the model's series); the pipe leak is 500.
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "knute-backend-city"
prefix = "knute"

[store]
path = "backend.sqlite"

[water]
evaluate_every_s = 1
silent_after_intervals = 1000
district_rise_min_l_h = 20

[web]
port = 0
{tables}"""


def _read_line(sim: subprocess.Popen[str], pattern: str) -> tuple[float, ...]:
    """The numbers of the simulator's first line (of ten) matching ``pattern``."""
    assert sim.stdout is not None
    line = ""
    for _ in range(10):
        line = sim.stdout.readline()
        found = re.match(pattern, line)
        if found:
            return tuple(float(v) for v in found.groups())
    raise AssertionError(f"no line {pattern!r}: {line!r}; {sim.stderr and sim.stderr.read()}")


def _release(clock_file: Path, simulated: float, wall: float) -> None:
    """Write the clock file whole (a temporary name, then a rename)."""
    part = clock_file.with_suffix(".part")
    part.write_text(json.dumps({"simulated": simulated, "wall": wall}))
    part.rename(clock_file)


def _up(gateway: GatewayProcess, meters: int) -> bool:
    """The gateway's sources open and every bulk meter answering its polls."""
    sources = gateway.try_status().get("sources", {})
    return bool(sources) and all(s.get("state") == "open" for s in sources.values()) \
        and sources.get("modbus", {}).get("online") == meters


def _stop(sim: subprocess.Popen[str]) -> None:
    """SIGTERM (the simulator then stops its modbus-sim), SIGKILL if it does not exit."""
    if sim.poll() is None:
        sim.terminate()
        try:
            sim.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            sim.kill()
    sim.communicate()


def _open(alerts: Subscriber, name: str, subject: str) -> list[dict[str, Any]]:
    return [m.doc() for m in alerts.messages(topic=f"knute/alert/{name}/{subject}")
            if m.doc()["state"] == "open"]


# Its own waits (start-ups, RUN_S + 180 s for the alerts, 60 s for the store) pass the
# suite's 300 s on a loaded machine: a WaitTimeout with its figures, not a bare kill.
@pytest.mark.timeout(600)
def test_the_citys_planted_leaks_are_raised_by_the_backend(
        knute_bin: Path, mosquitto: Broker, tmp_path: Path) -> None:
    day0 = int(time.time() - 8 * DAY_S) // DAY_S * DAY_S
    start = float(day0 + START_H * HOUR_S)
    # The city's clock stands at ``start`` until the gateway and the simulator are up
    # (a process that starts late on a loaded machine would miss the first nights, and
    # the backend a baseline): the run stays in the nine days of history the backend
    # evaluates however long they take.
    city = _city(start)
    backend = BackendProcess(tmp_path / "backend")
    backend.write_config(_backend_config(mosquitto, city.districts))
    alerts = Subscriber(mosquitto.host, mosquitto.port, "knute/alert/#",
                        client_id="city-alerts")
    readings = Subscriber(mosquitto.host, mosquitto.port, "knute/water_meter/+/up",
                          client_id="city-readings")
    gw_dir = tmp_path / "gateway"
    gw_dir.mkdir()
    gateway = GatewayProcess(gw_dir)
    link = tmp_path / "radio"
    clock_file = tmp_path / "city-clock.json"
    modbus = f"127.0.0.1:{free_port()}"
    sim: subprocess.Popen[str] | None = None
    try:
        backend.start()
        launched = time.monotonic()
        gateway.write_config(_gateway_config(gw_dir, mosquitto, link, gateway.status_socket,
                                             clock_file, modbus, city))
        gateway.start(wait_sources=False)          # its pty and modbus-sim come next
        gateway_s = time.monotonic() - launched
        leak_start = start + LEAK_AFTER_H * HOUR_S
        household = next(x for x in city.leaks if x.where == "household")
        pipe = next(x for x in city.leaks if x.where == "pipe")
        leaky, dry = city.districts
        assert household.subject in leaky.households and pipe.subject == leaky.name
        sim = subprocess.Popen(
            [str(knute_bin), "simulate", "--city", "--districts", "2", "--households", "20",
             "--leaks", f"{LEAK_L_H:g}", "--leak-start", str(leak_start),
             "--leak-district", "dma01", "--seed", str(SEED), "--start", str(start),
             "--speed", str(SPEED), "--clock-file", str(clock_file), "--for", str(RUN_S),
             "--serial-pty", str(link),
             "--modbus", modbus, "--registry", str(gw_dir / "registry.db")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held, = _read_line(sim, r"clock held: simulated (\S+) until ")
        assert held == start, (held, start)
        sim_s = time.monotonic() - launched
        meters = len(bulk_units(city))
        try:
            wait_for(lambda: _up(gateway, meters) or sim.poll() is not None, 120,
                     "the gateway's sources open and the bulk meters answering")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}: {gateway.try_status().get('sources')}\n"
                                 + gateway.log_tail()) from None
        assert sim.poll() is None, sim.communicate()
        up_s = time.monotonic() - launched
        wall = time.time() + RELEASE_S
        _release(clock_file, start, wall)
        sim_start, sim_wall, _ = _read_line(
            sim, r"city clock: simulated (\S+) at wall (\S+), speed \S+ "
                 r"\(a gateway on it: clock_speed = \S+, clock_start = (\S+)\)")
        assert sim_start == start and abs(sim_wall - wall) < 0.002, (sim_start, sim_wall)
        started = (f"the city's clock held {up_s:.1f} s of wall time ({up_s * SPEED / HOUR_S:.0f}"
                   f" simulated hours) until the gateway answered ({gateway_s:.1f} s), the "
                   f"simulator was set up ({sim_s:.1f} s) and every bulk meter was polled")

        def raised() -> bool:
            return all(_open(alerts, name, subject) for name, subject in (
                ("steady_flow", household.subject), ("district_leak", leaky.name),
                ("district_loss_rise", leaky.name)))

        try:
            wait_for(raised, RUN_S + 180, "the backend's household and district alerts")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; alerts {[m.topic for m in alerts.messages()]}\n"
                                 f"{started}; " + _trips(readings) + "\n"
                                 + _nights(tmp_path / "backend", city) + "\n"
                                 + backend.log_text()[-2000:]
                                 + gateway.log_tail()) from None
        _stop(sim)
        gateway.stop(timeout=20)            # drains its spool to the broker
        published = len({m.doc()["id"] for m in readings.messages()})
        try:
            wait_for(lambda: backend.summary()["readings"] >= published, 60,
                     "the backend to store every reading the broker carried")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}: {published} published, {backend.summary()}") from None
        summary = backend.summary()
    finally:
        if sim is not None:
            _stop(sim)
        gateway.stop(timeout=20)
        gateway.close()
        backend.stop()
        alerts.close()
        readings.close()
    print(f"{started}; {_trips(readings)}")
    # Every poll was stamped with its meter's time (bulk_water_meter has a [clock]).
    assert all(rx.get("clock") == "device" for rx in _modbus_receivers(readings))
    assert summary["counters"].get("bad", 0) == 0 and summary["readings"] > 40 * 4
    assert summary["counters"].get("unassigned", 0) == 0
    # The household leak: its own meter's hours as evidence, each with the leak's water.
    opened = _open(alerts, "steady_flow", household.subject)[0]
    hours = opened["evidence"]
    assert len(hours) >= 24 and all(h["litres"] >= LEAK_L_H for h in hours), hours
    assert min(parse_utc(h["hour"]) for h in hours) >= household.start - HOUR_S
    # The pipe leak, by the minimum night flow: a night after it started, with the
    # night's balances (bulk meters polled over Modbus) as evidence.
    mnf = _open(alerts, "district_leak", leaky.name)[0]
    margins = {"mnf": 0.0, "rise": 0.0, "timing_h": 0.0, "night": 0.0, "run": 0.0}
    inlet_polls = _polls(readings)[leaky.inflow]
    # Both leaks run through the inlet (1,000 L/h and the night's use): each hour's
    # inflow is the model's within what interpolating its boundaries allows
    # (``_boundary_slack``, with the polls' timing), less than half a leak.
    assert min(h["inflow_l"] for h in mnf["evidence"]) - mnf["value"] < 50, mnf
    for hour in mnf["evidence"]:
        at = int(parse_utc(hour["hour"]))
        assert at >= pipe.start
        model = _bulk_l(city, leaky.name, 0, at)
        allowed = sum(_boundary_slack(city, leaky.name, 0, inlet_polls, b)
                      for b in (at, at + HOUR_S)) + 10
        assert model > 2 * LEAK_L_H and allowed < LEAK_L_H / 2, (
            model, allowed, [_around(inlet_polls, b) for b in (at, at + HOUR_S)],
            _trips(readings))
        assert abs(hour["inflow_l"] - model) <= allowed, (
            hour, model, allowed, [_around(inlet_polls, b) for b in (at, at + HOUR_S)])
        assert hour["outflow_l"] == 0
        margins["mnf"] = max(margins["mnf"], abs(hour["inflow_l"] - model) / allowed)
        assert hour["loss_l"] == hour["inflow_l"] - hour["outflow_l"] - hour["households_l"]
        assert abs(hour["measured"] + hour["estimated"] + hour["missing"] - 1.0) < 1e-9
    # ... and by the balance: the night loss rose by the pipe leak's size, not by the
    # household's (its meter counts it), over two nights in a row.
    rise = _open(alerts, "district_loss_rise", leaky.name)[0]
    nights = rise["evidence"]
    assert len(nights) == 2, nights
    tz = ZoneInfo("Europe/Oslo")
    for night in nights:
        # A night's loss is the mean of its hours, so of their two outer boundaries'
        # errors: the interpolation across the change of flow (within the 20 L/h
        # the rise floor allows for) and the polls' timing (``_poll_timing``).
        midnight = int(datetime.fromisoformat(night["night"]).replace(tzinfo=tz).timestamp())
        inflow = max(_bulk_l(city, leaky.name, 0, midnight + h * HOUR_S) for h in (2, 3))
        timing_h = max(_poll_timing(inlet_polls, midnight + h * HOUR_S) for h in (2, 4))
        allowed = timing_h * inflow + 20
        assert allowed < LEAK_L_H / 2          # ... so that it tells the household's leak out
        assert abs(night["rise_l_h"] - LEAK_L_H) < allowed, (nights, allowed)
        assert night["rise_l_h"] > night["level_l_h"]
        margins["rise"] = max(margins["rise"], abs(night["rise_l_h"] - LEAK_L_H) / allowed)
        margins["timing_h"] = max(margins["timing_h"], timing_h)
    # Nothing for the district without a leak, and no other household's flow.
    assert not [m.topic for m in alerts.messages()
                if m.topic.endswith(f"/{dry.name}") and m.doc()["state"] == "open"]
    flows = {m.topic.split("/")[-1] for m in alerts.messages()
             if m.topic.startswith("knute/alert/steady_flow/") and m.doc()["state"] == "open"}
    assert flows == {household.subject}, flows
    _check_balances(tmp_path / "backend", city, readings, margins)
    print(f"worst margins: a night hour's inflow off the model's by {margins['mnf']:.0%} "
          f"of its slack, the rise off the pipe leak by {margins['rise']:.0%} of its "
          f"allowance, a night hour's loss off the model's by {margins['night']:.0%} of its "
          f"slack, a run's by {margins['run']:.0%}; the polls' timing at a night's "
          f"boundaries within {margins['timing_h'] * 60:.1f} simulated minutes")


def _modbus_receivers(readings: Subscriber) -> list[dict[str, Any]]:
    return [rx for message in readings.messages() for rx in message.doc()["receivers"]
            if rx["source"] == "modbus"]


def _trips(readings: Subscriber) -> str:
    """The bulk meters' poll round trips in a line (the test's figures, or why it failed)."""
    trips = sorted(rx["round_trip_ms"] for rx in _modbus_receivers(readings))
    if not trips:
        return "no polls"
    return (f"{len(trips)} polls, round trip median {trips[len(trips) // 2]:.1f} ms, "
            f"90 % {trips[len(trips) * 9 // 10]:.1f} ms, worst {trips[-1]:.1f} ms")


def _nights(root: Path, city: City) -> str:
    """The districts' night-window balances as stored: what a missing night alert saw."""
    config = backend_config.load(root / "backend.toml")
    store = open_store(config)
    lines = []
    try:
        for district in config.districts:
            for b in district_balances(store, district, int(city.start),
                                       int(city.start) + int(RUN_S * SPEED)):
                if local_hour(b.hour, config.timezone).hour in (2, 3):
                    lines.append(f"{district.name} {b.hour}: inflow {b.inflow_l} loss "
                                 f"{b.loss_l} measured {b.measured:.2f} complete {b.complete}")
    finally:
        store.close()
    return "\n".join(lines)


def _polls(readings: Subscriber) -> dict[str, list[tuple[float, float]]]:
    """(time, how far its stamp may be off in s) of each device's polls, in time order.

    A bulk meter's poll (``"clock": "device"``) is stamped with the meter's own
    time, read in the same answer as its totaliser: off by at most half a tick of
    its clock. Without it the gateway stamps a poll halfway between its request
    and the answer, and the meter read its totaliser in between: off by at most
    half the round trip it published (``round_trip_ms``, wall time), on the
    simulated clock SPEED times that. Radio devices have none.
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for message in readings.messages():
        doc = message.doc()
        for rx in doc["receivers"]:
            if rx["source"] == "modbus":
                half = METER_CLOCK_S / 2 if rx.get("clock") == "device" \
                    else rx["round_trip_ms"] / 1000 * SPEED / 2
                out.setdefault(doc["device"], []).append((parse_utc(doc["received_at"]), half))
    return {device: sorted(polls) for device, polls in out.items()}


def _poll_timing(polls: Sequence[tuple[float, float]], boundary: int) -> float:
    """How far (simulated hours) the stamps of the two polls around ``boundary`` may be off.

    The 1 ms on each stamp: ``received_at`` is published in whole milliseconds.
    """
    at = bisect.bisect_left(polls, (boundary, 0.0))
    if at == 0 or at == len(polls):
        return float("inf")
    return (max(polls[at - 1][1], polls[at][1]) + 0.001) / HOUR_S


def _check_balances(root: Path, city: City, readings: Subscriber,
                    margins: dict[str, float]) -> None:
    """The stored hourly balances: shares from what the broker carried, litres from the model.

    A household's hour is measured when one of its readings carried it (no frame
    was lost on the line, so none is estimated), missing otherwise. Where every
    household's hour is in, the households' sum is the model's to the litre. The
    loss is the model's within what polling allows (``_boundary_slack``): hour
    by hour in the night window (the hours the district signals use), and
    summed over each run of complete hours, where the timing errors of the
    hours inside cancel and only the run's two ends remain.
    """
    carried: dict[str, set[int]] = {}
    for message in readings.messages():
        doc = message.doc()
        carried.setdefault(doc["device"], set()).update(
            int(parse_utc(slot["start"])) for slot in doc.get("profile", []))
    polled = _polls(readings)
    config = backend_config.load(root / "backend.toml")
    store = open_store(config)
    runs = estimated_bulk = 0
    try:
        for district, dma in zip(config.districts, city.districts, strict=True):
            bulk = carried[dma.inflow]
            first, last = min(bulk) + 2 * HOUR_S, max(bulk) - HOUR_S   # the polls' full hours
            meters = [(side, polled[d]) for side, d in enumerate((dma.inflow, dma.outflow))
                      if d]

            def slack(boundary: int, name: str = dma.name,
                      meters: list[tuple[int, list[tuple[float, float]]]] = meters) -> float:
                return sum(_boundary_slack(city, name, side, polls, boundary)
                           for side, polls in meters)

            run: list[tuple[int, float, float]] = []
            for balance in [*district_balances(store, district, first, last), None]:
                if balance is not None:
                    heard = sum(balance.hour in carried.get(d, ()) for d in dma.households)
                    n = len(dma.households)
                    assert (balance.measured, balance.estimated, balance.missing) == (
                        heard / n, 0.0, (n - heard) / n), (district.name, balance)
                    assert balance.inflow_l is not None and balance.loss_l is not None
                    # Complete: every household's hour in and the bulk meters' measured
                    # (two hours without a poll, on a loaded machine, leave one estimated).
                    assert heard == n or not balance.complete
                    estimated_bulk += heard == n and not balance.complete
                if balance is None or not balance.complete:
                    if len(run) >= 24:
                        runs += 1
                        off = abs(sum(r[1] for r in run) - sum(r[2] for r in run))
                        allowed = slack(run[0][0]) + slack(run[-1][0] + HOUR_S) + 10
                        assert off <= allowed, (district.name, run[0][0], len(run), off)
                        margins["run"] = max(margins["run"], off / allowed)
                    run = []
                    continue
                assert balance.loss_l is not None
                day, into = divmod(balance.hour - city.start, DAY_S)
                use = {d: city.household_use(d, day) for d in dma.households}
                counted = sum(city.household_counted(d, day, use[d])[into // HOUR_S]
                              for d in dma.households)
                assert balance.households_l == counted, (district.name, balance)
                loss = (_bulk_l(city, dma.name, 0, balance.hour)
                        - _bulk_l(city, dma.name, 1, balance.hour) - counted)
                run.append((balance.hour, balance.loss_l, loss))
                if local_hour(balance.hour, config.timezone).hour in (2, 3):
                    allowed = slack(balance.hour) + slack(balance.hour + HOUR_S) + 10
                    assert abs(balance.loss_l - loss) <= allowed, (district.name, balance, loss)
                    margins["night"] = max(margins["night"],
                                           abs(balance.loss_l - loss) / allowed)
    finally:
        store.close()
    assert runs >= 2, runs
    print(f"{runs} runs of complete hours ({estimated_bulk} hours with a bulk meter's hour "
          f"estimated)")


def _bulk_l(city: City, district: str, side: int, hour: int) -> float:
    """The model's litres through a bulk meter (0 inlet, 1 outlet) in ``hour``."""
    day, into = divmod(hour - city.start, DAY_S)
    return city.bulk_hours(district, day)[side][into // HOUR_S].litres


def _boundary_slack(city: City, district: str, side: int,
                    polls: Sequence[tuple[float, float]], boundary: int) -> float:
    """How far a bulk meter's totaliser sampled at ``boundary`` may be from the model's.

    The gateway interpolates between the polls around the boundary
    (gateway/modbus/history.py): off by at most a quarter of their gap times
    the change of flow there (a gap over an hour: the first poll after it, off
    by all the flow since), and by the flow over the time the two polls'
    stamps may be off (``_poll_timing``: half a tick of the meter's clock).
    """
    before, after = (_bulk_l(city, district, side, boundary + k * HOUR_S) for k in (-1, 0))
    at = bisect.bisect_left(polls, (boundary, 0.0))
    if at == 0 or at == len(polls):
        return float("inf")
    gap_h = (polls[at][0] - polls[at - 1][0]) / HOUR_S
    timing = abs(after - before) * gap_h / 4 if gap_h <= 1 else max(before, after) * gap_h
    return timing + _poll_timing(polls, boundary) * max(before, after)


def _around(polls: Sequence[tuple[float, float]], boundary: int) -> str:
    """The polls around ``boundary``: simulated minutes from it and how far (s) its stamp
    may be off."""
    at = bisect.bisect_left(polls, (boundary, 0.0))
    return ", ".join(f"{(t - boundary) / 60:+.0f} min (±{half:g} s)"
                     for t, half in polls[max(0, at - 2):at + 2])

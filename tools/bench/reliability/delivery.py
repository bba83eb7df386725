"""Delivery cases: broker outage, a broker that never acknowledges, reconnect storms, kill -9."""

from __future__ import annotations

import random
import time
from pathlib import Path

from knute.tools.bench.reliability.harness import (
    rig,
)
from knute.tools.bench.reliability.results import (
    WAIT_S,
    CaseResult,
    spool_problems,
)
from knute.tools.rig.wait import wait_for

# ---------------------------------------------------------------- delivery cases


def case_broker_outage(workdir: Path, *, outage_s: float | None = None,
                       frames: int | None = None, name: str = "broker_outage",
                       rate: float = 200.0, seed: int = 1) -> CaseResult:
    """The broker is killed (kill -9) while the fleet keeps sending.

    ``outage_s``: the broker stays down that long in real time. ``frames``:
    time-accelerated; the broker stays down while the fleet sends that many
    valid frames (the backlog a longer outage leaves at DESIGN_RATE_FPS).
    """
    result = CaseResult(name, runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.start_stream()
        r.kill_broker()
        down_at = time.monotonic()
        if frames is not None:
            r.fleet.wait_sent_valid(r.fleet.sent_valid + frames, timeout=max(WAIT_S, frames / 50))
        else:
            time.sleep(outage_s or 1.0)
        result.notes["outage_real_s"] = round(time.monotonic() - down_at, 1)
        result.notes["backlog"] = int(r.gw.status()["spool"]["depth"])
        if not r.gw.check():
            result.problems.append("gateway died during the outage")
        r.restart_broker()
        time.sleep(0.5)
        r.drain(result)
    return result


def case_no_puback(workdir: Path, *, hold_s: float = 3.0, rate: float = 200.0,
                   seed: int = 2) -> CaseResult:
    """A broker that accepts the connection and PUBLISHes but never sends PUBACK."""
    result = CaseResult("no_puback", runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.start_stream()
        r.link.set_mode("blackhole")
        wait_for(lambda: r.link.swallowed > 0, 60, "a PUBLISH into the black hole")
        time.sleep(0.5)          # acks of the last good connection are committed by now
        before = r.gw.status()["spool"]["acked_total"]
        time.sleep(hold_s)
        st = r.gw.status()
        if st["spool"]["acked_total"] != before:
            result.problems.append("rows were deleted from the spool without a PUBACK")
        result.notes["swallowed"] = r.link.swallowed
        result.notes["backlog"] = st["spool"]["depth"]
        result.notes["stale_connections"] = st["forwarder"].get("stale_connections", 0)
        if hold_s > 35 and not result.notes["stale_connections"]:
            result.problems.append("the forwarder never gave up on the silent connection")
        r.drain(result)
    return result


def case_reconnect_storm(workdir: Path, *, storm_s: float = 5.0, rate: float = 200.0,
                         seed: int = 3) -> CaseResult:
    """The broker connection is dropped every 0.5-3 s while the fleet sends."""
    result = CaseResult("reconnect_storm", runs=1)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.start_stream()
        r.link.set_mode("storm")
        time.sleep(storm_s)
        # A loaded machine may reconnect slower than a short storm drops: storm on
        # until the gateway was dropped at least twice (``connections`` counts the
        # connection before the storm too).
        wait_for(lambda: r.link.connections >= 3, 60, "two reconnects in the storm")
        result.notes["reconnects"] = r.gw.status()["forwarder"].get("reconnects", 0)
        result.notes["connections"] = r.link.connections
        r.drain(result)
    return result


def case_kill9(workdir: Path, *, cycles: int = 3, rate: float = 300.0,
               seed: int = 4) -> CaseResult:
    """The gateway is kill -9'd at random moments under load, ``cycles`` times.

    In every other cycle the broker link is down, so the kill meets a full
    spool. After each kill the spool file is checked (spool_problems) before
    the gateway starts again on it.
    """
    result = CaseResult("gateway_kill9", runs=cycles)
    rng = random.Random(seed)
    with rig(workdir, rate=rate, seed=seed) as r:
        r.fleet.start()
        last_accepted = 0
        for cycle in range(cycles):
            r.link.set_mode("down" if cycle % 2 else "relay")
            r.gw.start()
            time.sleep(rng.uniform(0.2, 1.5))
            if not r.gw.check():
                result.problems.append(f"cycle {cycle}: the gateway died by itself")
            r.gw.kill()
            problems = spool_problems(r.gw.spool_path)
            result.problems += [f"cycle {cycle}: {p}" for p in problems]
            accepted = r.gw.spool_meta()["accepted_total"]
            if accepted < last_accepted:
                result.problems.append(f"cycle {cycle}: accepted_total went back")
            last_accepted = accepted
        result.notes["kills"] = r.gw.kills
        r.drain(result)
    return result

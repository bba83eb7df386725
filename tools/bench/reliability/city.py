"""Cases of a city with several gateways and brokers: broker failover, cross-gateway replay.

``broker_failover``: one gateway with ``[mqtt] brokers = [a, b]`` (two real
Mosquittos, each behind a FaultyLink) under a steady stream: a goes down (the
gateway moves to b), a returns (the gateway moves back, ``failback``), then
both are cut (the spool holds, the status says ``all_brokers_down``), then
both return and everything drains. The backend subscribes to both brokers:
readings must come through each broker in counter order; a reading the old
broker passes on after newer ones through the new broker is counted
(``reordered_across_brokers``), not failed, as docs/mqtt.md allows.

``cross_gateway_replay``: gateway B (``learn_counters = true``) is started
once so its listening session exists, then stopped; gateway A accepts the
fleet's frames meanwhile. B starts again, takes what it missed from its
session, and every frame A accepted is replayed at B: B must accept none
(``replay``, or ``duplicate`` for a device's very last counter).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from knute.tools.bench.reliability.harness import GatewayProc, make_dir, rig
from knute.tools.bench.reliability.results import WAIT_S, CaseResult
from knute.tools.rig.wait import wait_for

REPLAY_RATE = 150.0        # replayed frames a second at gateway B


def _persistent_broker(path: Path) -> Any:
    """A Mosquitto that keeps sessions and queues across a stop and start."""
    from knute.tools.rig.broker import Broker

    return Broker(make_dir(path), "mosquitto", persistent=True,
                  extra_config="max_queued_messages 0\n")


def case_broker_failover(workdir: Path, *, down_s: float = 2.0, rate: float = 200.0,
                         seed: int = 11) -> CaseResult:
    """Fail over to the second broker, fail back, survive every broker down; lose nothing."""
    result = CaseResult("broker_failover", runs=1)
    a = _persistent_broker(workdir / "broker-a")
    b = _persistent_broker(workdir / "broker-b")
    a.start()
    b.start()
    try:
        with rig(workdir, rate=rate, seed=seed, broker=a, fallbacks=[b],
                 mqtt_extra="failback_check_s = 1\n") as r:
            link_b = r.fallback_links[0]
            addr_a = f"127.0.0.1:{r.link.port}"
            addr_b = f"127.0.0.1:{link_b.port}"

            def on(addr: str) -> bool:
                fwd = r.gw.status()["forwarder"]
                return bool(fwd.get("broker") == addr and fwd.get("connected"))

            r.start_stream(WAIT_S)
            # a goes down (cut first, so no PUBACK of a message it then loses, then
            # stopped with its persistence saved): the gateway moves to b.
            r.link.set_mode("down")
            a.stop()
            t0 = time.monotonic()
            wait_for(lambda: on(addr_b), WAIT_S, "the gateway on broker b")
            result.notes["failover_s"] = round(time.monotonic() - t0, 2)
            before = r.backend.delivered()
            wait_for(lambda: r.backend.delivered() >= before + 20, WAIT_S, "deliveries via b")
            time.sleep(down_s)
            # a returns: the gateway moves back within failback_check_s or so.
            a.start()
            r.link.set_mode("relay")
            t0 = time.monotonic()
            wait_for(lambda: on(addr_a), WAIT_S, "failback to broker a")
            result.notes["failback_s"] = round(time.monotonic() - t0, 2)
            # Every broker cut: the spool holds, the status says so.
            r.link.set_mode("down")
            link_b.set_mode("down")
            wait_for(lambda: r.gw.status()["forwarder"].get("all_brokers_down") == 1, WAIT_S,
                     "all_brokers_down in the status")
            depth0 = int(r.gw.status()["spool"]["depth"])
            time.sleep(down_s)
            st = r.gw.status()
            result.notes["backlog"] = int(st["spool"]["depth"])
            if result.notes["backlog"] <= depth0:
                result.problems.append("the spool did not grow while every broker was down")
            if not r.gw.check():
                result.problems.append("gateway died with every broker down")
            fwd = st["forwarder"]
            result.notes["failovers"] = fwd.get("failovers", 0)
            result.notes["failbacks"] = fwd.get("failbacks", 0)
            link_b.set_mode("relay")
            r.link.set_mode("relay")
            r.drain(result)
    finally:
        a.stop()
        b.stop()
    return result


def case_cross_gateway_replay(workdir: Path, *, frames: int = 300, rate: float = 200.0,
                              seed: int = 12, learn: bool = True) -> CaseResult:
    """Frames gateway A accepted while B was away, replayed at B: B accepts none.

    ``learn=False`` runs B without ``learn_counters`` (the control: then B
    accepts the replays, and the case reports it as a problem).
    """
    from knute.tools.rig.broker import free_port
    from knute.tools.sim.pktfwd import ForwarderClient, rxpk

    result = CaseResult("cross_gateway_replay", runs=1)
    with rig(workdir, rate=rate, seed=seed, mqtt_extra="learn_counters = true\n") as r:
        udp_b = free_port()
        gw_b = GatewayProc(workdir / "gateway-b", r.broker.port, r.fleet.devices,
                           udp_port=udp_b, gateway_id="rel-b",
                           mqtt_extra=f"learn_counters = {'true' if learn else 'false'}\n")
        fwd = ForwarderClient(bytes.fromhex("aa555a00000000b0"), "127.0.0.1", udp_b)
        try:
            if learn:   # B once, so its listening session exists on the broker
                gw_b.start()
                wait_for(lambda: bool(gw_b.status()["peers"]["subscribed"]), WAIT_S,
                         "gateway B subscribed")
                gw_b.stop()
            r.fleet.record = []
            r.gw.start()
            r.fleet.start()
            r.fleet.wait_sent_valid(frames)
            r.fleet.stop()
            recorded = list(r.fleet.record)
            r.drain(result)                   # A: everything accepted is at the backend
            accepted_a = result.accepted

            gw_b.start()
            if learn:
                wait_for(lambda: gw_b.status()["peers"]["heard"] >= accepted_a, WAIT_S,
                         "gateway B to hear what A accepted")
                wait_for(lambda: gw_b.status()["peers"]["pending"] == 0, WAIT_S,
                         "gateway B to apply it")
                result.notes["learned"] = gw_b.status()["peers"]["learned"]
            # Paced below the packet-forwarder source's budget for a concentrator that
            # has not delivered an accepted frame yet (STRANGER_RATE), which a replaying
            # attacker is: above it the source would shed the frames before any check.
            next_at = time.monotonic()
            for payload in recorded:
                fwd.push([rxpk(payload, rssi_dbm=-100, lsnr_db=2.0, freq_mhz=868.1, sf=9)])
                fwd.read_acks()
                next_at += 1.0 / REPLAY_RATE
                time.sleep(max(0.0, next_at - time.monotonic()))

            def answered() -> bool:
                totals = gw_b.status()["totals"]
                return int(totals["accepted"]) + int(totals["rejected"]) >= len(recorded)

            wait_for(answered, WAIT_S, "gateway B to judge every replayed frame")
            st = gw_b.status()
            reasons = st["rejected"]
            accepted_b = int(st["totals"]["accepted"])
            result.sent += len(recorded)
            result.notes["replayed"] = len(recorded)
            result.notes["rejected_replay"] = int(reasons.get("replay", 0))
            result.notes["rejected_duplicate"] = int(reasons.get("duplicate", 0))
            # A counter far below the last one (under [gateway] counter_reset_below) looks
            # like a node that restarted: rejected as counter_reset until an operator says so.
            result.notes["rejected_counter_reset"] = int(reasons.get("counter_reset", 0))
            result.notes["accepted_at_b"] = accepted_b
            if accepted_b:
                result.problems.append(f"gateway B accepted {accepted_b} of {len(recorded)} "
                                       "frames gateway A had already accepted")
            other = {k: v for k, v in reasons.items()
                     if k not in ("replay", "duplicate", "counter_reset")}
            if other:
                result.notes["rejected_other"] = other
                if learn:
                    result.problems.append(f"replayed frames rejected for other reasons than "
                                           f"replay, duplicate or counter_reset: {other}")
            wait_for(lambda: gw_b.status()["spool"]["depth"] == 0, WAIT_S, "B's spool drained")
            r.backend.quiet(0.3)
            code = gw_b.stop()
            if code != 0:
                result.problems.append(f"gateway B exit status {code} on SIGTERM")
            meta = gw_b.spool_meta()
            result.accepted += meta["accepted_total"]
            result.crashes += gw_b.crashes
            result.check_log(gw_b.log_text(), "gateway B's log")
        finally:
            fwd.close()
            gw_b.close()
    return result

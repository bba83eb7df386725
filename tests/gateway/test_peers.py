"""gateway.peers: what a gateway learns from the readings other gateways publish.

The process-level proof (two real gateways, one replaying at the other what
the first accepted) is tests/reliability/test_city.py; these hold the pure
parts to their rules.
"""

from __future__ import annotations

import json
from pathlib import Path

from knute.gateway.peers import CounterInbox, parse_reading
from knute.gateway.pipeline_checks import DUPLICATE, REPLAY, ReplayGuard
from knute.gateway.spool import Spool


def reading(device: str = "2000000a", fcnt: int = 7, gateway: str = "gw-a",
            **extra: object) -> bytes:
    return json.dumps({"id": f"{device}:{fcnt}", "device": device, "fcnt": fcnt,
                       "gateway": gateway, **extra}).encode()


def test_another_gateways_reading_is_parsed() -> None:
    got = parse_reading("city/water_meter/2000000a/up", reading(), prefix="city",
                        own_gateway="gw-b")
    assert got == (0x2000000A, 7, 0)
    got = parse_reading("a/b/water_meter/2000000a/up", reading(epoch=2), prefix="a/b",
                        own_gateway="gw-b")
    assert got == (0x2000000A, 7, 2)


def test_anything_else_is_ignored_without_raising() -> None:
    bad = [
        ("city/water_meter/2000000a/up", reading(gateway="gw-b")),          # our own
        ("city/water_meter/2000000b/up", reading()),                        # topic != device
        ("city/gateway/gw-a/status", reading()),
        ("other/water_meter/2000000a/up", reading()),
        ("city/water_meter/2000000a/condition", reading()),
        ("city/water_meter/2000000a/up", b"\xff not json"),
        ("city/water_meter/2000000a/up", b"[1, 2]"),
        ("city/water_meter/2000000a/up", reading(fcnt=-1)),
        ("city/water_meter/2000000a/up", reading(fcnt=1 << 32)),
        ("city/water_meter/2000000a/up", reading(epoch=-1)),
        ("city/water_meter/zzzzzzzz/up", reading(device="zzzzzzzz")),
        ("city/water_meter/2000000a/up",
         json.dumps({"device": "2000000a", "fcnt": True, "gateway": "gw-a"}).encode()),
    ]
    for topic, payload in bad:
        assert parse_reading(topic, payload, prefix="city", own_gateway="gw-b") is None, topic


def test_inbox_keeps_the_highest_counter_of_the_latest_epoch() -> None:
    inbox = CounterInbox(max_pending=2)
    inbox.offer(1, 10, 0)
    inbox.offer(1, 5, 0)
    inbox.offer(2, 50, 0)
    inbox.offer(2, 3, 1)          # a later epoch wins over a higher counter
    inbox.offer(3, 1, 0)          # full: dropped, counted
    assert inbox.pending() == 2
    assert inbox.take() == {1: (10, 0), 2: (3, 1)}
    assert inbox.take() == {}
    assert (inbox.heard, inbox.dropped) == (5, 1)


def test_a_learned_counter_rejects_older_frames_and_never_lowers() -> None:
    guard = ReplayGuard({1: 20})
    assert guard.learn(1, 30) and guard.last(1) == 30
    assert not guard.learn(1, 25) and guard.last(1) == 30
    assert guard.check(1, 29, b"x") == REPLAY
    assert guard.check(1, 30, b"x") == DUPLICATE     # taken by the other gateway
    assert guard.check(1, 31, b"x") is None
    assert guard.learn(2, 4) and guard.check(2, 3, b"x") == REPLAY


def test_the_spool_keeps_learned_counters_and_never_lowers_one(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    try:
        spool.learn_counters({1: 40, 2: 7})
        spool.learn_counters({1: 12})
        assert spool.counters() == {1: 40, 2: 7}
    finally:
        spool.close()
    again = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=10**9)
    try:
        assert again.counters() == {1: 40, 2: 7}
        assert again.stats()["depth"] == 0
    finally:
        again.close()

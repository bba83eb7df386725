"""Broker outages, a broker that never sends PUBACK and a reconnect storm, while a
simulated fleet keeps sending: every accepted frame reaches the backend, per-device
order is kept, a duplicate always repeats the same id and bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check


def test_broker_killed_for_one_second(tmp_path: Path) -> None:
    result = rel.case_broker_outage(tmp_path, outage_s=1.0, name="broker_outage_1s")
    check(result)
    assert result.accepted > 100 and result.notes["backlog"] > 0


def test_ten_minute_outage_backlog_short(tmp_path: Path) -> None:
    # Time-accelerated: the broker stays down while the fleet sends this many frames.
    result = rel.case_broker_outage(tmp_path, frames=1500, rate=800.0,
                                    name="broker_outage_10min")
    check(result)
    assert result.notes["backlog"] >= 1000


def test_broker_without_puback_short(tmp_path: Path) -> None:
    result = rel.case_no_puback(tmp_path, hold_s=2.0)
    check(result)
    assert result.notes["swallowed"] > 0 and result.notes["backlog"] > 0


def test_reconnect_storm_short(tmp_path: Path) -> None:
    result = rel.case_reconnect_storm(tmp_path, storm_s=4.0)
    check(result)
    assert result.notes["connections"] >= 3


@pytest.mark.slow
def test_broker_killed_for_thirty_seconds(tmp_path: Path) -> None:
    check(rel.case_broker_outage(tmp_path, outage_s=30.0, name="broker_outage_30s"))


@pytest.mark.slow
def test_broker_killed_for_ten_minutes_accelerated(tmp_path: Path) -> None:
    frames = int(600 * rel.DESIGN_RATE_FPS)
    result = rel.case_broker_outage(tmp_path, frames=frames, rate=1000.0,
                                    name="broker_outage_10min")
    check(result)
    assert result.notes["backlog"] >= frames * 0.9


@pytest.mark.slow
def test_broker_without_puback_past_the_ack_timeout(tmp_path: Path) -> None:
    result = rel.case_no_puback(tmp_path, hold_s=40.0)
    check(result)
    assert result.notes["stale_connections"] >= 1


@pytest.mark.slow
def test_reconnect_storm_for_a_minute(tmp_path: Path) -> None:
    check(rel.case_reconnect_storm(tmp_path, storm_s=60.0))

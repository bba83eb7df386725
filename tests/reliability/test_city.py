"""Several brokers and several gateways: failover to a second broker and back, every
broker down, and frames one gateway accepted replayed at another."""

from __future__ import annotations

from pathlib import Path

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check


def test_broker_failover_short(tmp_path: Path) -> None:
    result = rel.case_broker_failover(tmp_path, down_s=1.0)
    check(result)
    assert result.notes["failovers"] >= 1 and result.notes["failbacks"] >= 1
    assert result.notes["backlog"] > 0 and result.delivered > 100


def test_replay_at_another_gateway_is_rejected(tmp_path: Path) -> None:
    result = rel.case_cross_gateway_replay(tmp_path, frames=200)
    check(result)
    replayed = result.notes["replayed"]
    assert replayed >= 200 and result.notes["accepted_at_b"] == 0
    assert (result.notes["rejected_replay"] + result.notes["rejected_duplicate"]
            + result.notes["rejected_counter_reset"]) == replayed
    assert result.notes["rejected_replay"] > result.notes["rejected_duplicate"]


def test_without_learning_the_replay_gets_through(tmp_path: Path) -> None:
    # The control: the same run with gateway B not learning accepts the replays,
    # so the test above can fail.
    result = rel.case_cross_gateway_replay(tmp_path, frames=100, learn=False)
    assert result.notes["accepted_at_b"] > 0
    assert any("gateway B accepted" in p for p in result.problems)

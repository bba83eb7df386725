"""Alerts open and close with hysteresis and ignore periods already seen."""

from __future__ import annotations

from typing import Any

from knute.backend import alerts
from knute.backend.alerts import Rule

RULE = Rule("night_flow", open_above=20, close_below=10, open_after=2, close_after=2,
            unit="L/h")


def feed(values: list[float]) -> list[str]:
    state: dict[str, Any] = alerts.new_state()
    changes = []
    for period, value in enumerate(values):
        state, change = alerts.step(state, RULE, period, value, f"t{period}")
        changes.append(change or state["state"][0])
    return changes


def test_opens_after_two_periods_above_and_closes_after_two_below() -> None:
    assert feed([25, 25, 25, 5, 5, 5]) == ["c", "opened", "o", "o", "closed", "c"]


def test_a_value_between_the_thresholds_does_not_flap() -> None:
    # Open, then hovering at 15 (below the opening, above the closing level): stays open.
    assert feed([30, 30, 15, 30, 15, 15, 15, 9]) == [
        "c", "opened", "o", "o", "o", "o", "o", "o"]
    assert feed([30, 30, 9, 15, 9, 9]) == ["c", "opened", "o", "o", "o", "closed"]


def test_one_period_above_is_not_enough_when_two_are_asked() -> None:
    assert feed([30, 5, 30, 5, 30]) == ["c"] * 5


def test_a_period_seen_before_changes_nothing() -> None:
    state, _change = alerts.step(alerts.new_state(), RULE, 5, 30, "a")
    again, change2 = alerts.step(state, RULE, 5, 30, "b")
    older, change3 = alerts.step(state, RULE, 4, 30, "c")
    assert again == state == older and change2 == change3 == ""


def test_the_document_carries_evidence_and_thresholds() -> None:
    state = alerts.new_state()
    state, _ = alerts.step(state, RULE, 1, 30, "t1")
    state, change = alerts.step(state, RULE, 2, 40, "2026-01-05T03:00:00Z",
                                [{"hour": "2026-01-05T02:00:00Z", "litres": 40}])
    assert change == "opened"
    doc = alerts.document(RULE, "00000001", "meter", state, "2026-01-05T03:00:00Z")
    assert doc["state"] == "open" and doc["value"] == 40
    assert doc["evidence"] == [{"hour": "2026-01-05T02:00:00Z", "litres": 40}]
    assert doc["threshold"]["open_above"] == 20
    assert alerts.topic("knute", "night_flow", "00000001") == "knute/alert/night_flow/00000001"

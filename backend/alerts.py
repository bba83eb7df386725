"""Alerts that open and close with hysteresis, and their MQTT documents (pure).

A signal yields one value per *period* (an hour, a night, an evaluation). An
alert opens when the value is above ``open_above`` for ``open_after`` periods
in a row and closes when it is below ``close_below`` for ``close_after``
periods in a row; values in between keep the state. Periods at or before the
last one seen are ignored, so evaluating the same data twice changes nothing.
The document is published retained on ``<prefix>/alert/<signal>/<subject>``
(docs/schema/alert.schema.json).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPEN = "open"
CLOSED = "closed"


@dataclass(frozen=True)
class Rule:
    """When one signal's alert opens and closes."""

    signal: str
    open_above: float
    close_below: float
    open_after: int = 1
    close_after: int = 1
    unit: str = ""
    text: str = ""


def new_state() -> dict[str, Any]:
    """The state of an alert that never opened."""
    return {"state": CLOSED, "streak": 0, "last_period": None, "opened_at": None,
            "closed_at": None, "value": None, "evidence": []}


def step(state: Mapping[str, Any], rule: Rule, period: float, value: float,
         at: str, evidence: Sequence[Mapping[str, Any]] = ()) -> tuple[dict[str, Any], str]:
    """Feed one period's value; return (new state, ``opened``/``closed``/``""``).

    ``at`` is the time (ISO 8601 UTC) written as ``opened_at``/``closed_at``;
    ``evidence`` (the hours behind the value) is taken when the alert opens and
    kept until it opens again: it shows what triggered it.
    """
    new = dict(state)
    last = state.get("last_period")
    if last is not None and period <= last:
        return new, ""
    new["last_period"] = period
    is_open = state["state"] == OPEN
    toward = value > rule.open_above if not is_open else value < rule.close_below
    new["streak"] = int(state.get("streak", 0)) + 1 if toward else 0
    if is_open:
        new["value"] = value
        if toward and new["streak"] >= rule.close_after:
            new.update(state=CLOSED, streak=0, closed_at=at)
            return new, "closed"
        return new, ""
    if toward and new["streak"] >= rule.open_after:
        new.update(state=OPEN, streak=0, opened_at=at, closed_at=None, value=value,
                   evidence=list(evidence))
        return new, "opened"
    return new, ""


def document(rule: Rule, subject: str, subject_kind: str, state: Mapping[str, Any],
             updated_at: str) -> dict[str, Any]:
    """The alert as published (docs/schema/alert.schema.json)."""
    return {
        "alert": rule.signal,
        "subject": subject,
        "subject_kind": subject_kind,
        "state": state["state"],
        "opened_at": state["opened_at"],
        "closed_at": state["closed_at"],
        "value": state["value"],
        "unit": rule.unit,
        "threshold": {"open_above": rule.open_above, "close_below": rule.close_below,
                      "open_after": rule.open_after, "close_after": rule.close_after},
        "rule": rule.text,
        "evidence": list(state.get("evidence", [])),
        "updated_at": updated_at,
    }


def topic(prefix: str, signal: str, subject: str) -> str:
    """``<prefix>/alert/<signal>/<subject>``."""
    return f"{prefix}/alert/{signal}/{subject}"

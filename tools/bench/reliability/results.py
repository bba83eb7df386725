"""One row of the reliability table, and the checks cases share on what a run left."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PREFIX = "rel"
WAIT_S = 120.0
DESIGN_RATE_FPS = 20.0           # frames/s the 10-minute outage is scaled by (docs/reliability.md)
ROW_KEYS = ("case", "runs", "sent", "accepted", "delivered", "lost", "duplicates", "crashes")


@dataclass
class CaseResult:
    """One row of the table, plus what went wrong (empty when the case passed)."""

    case: str
    runs: int = 0
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    crashes: int = 0
    evicted: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing accepted was lost, nothing crashed and no check failed."""
        return not self.problems and self.lost == 0 and self.crashes == 0

    def count_delivery(self, accepted: int, evicted: int, delivered: int,
                       duplicates: int) -> None:
        """Add one city's figures; what was accepted and neither evicted nor delivered
        counts as lost."""
        self.accepted += accepted
        self.evicted += evicted
        self.delivered += delivered
        self.duplicates += duplicates
        self.lost += max(0, accepted - evicted - delivered)

    def check_log(self, log: str, where: str) -> None:
        """Count each traceback in a gateway's ``log`` as a crash and a problem in ``where``."""
        tracebacks = log.count("Traceback (most recent call last)")
        if tracebacks:
            self.crashes += tracebacks
            self.problems.append(f"{tracebacks} traceback(s) in {where}")

    def row(self) -> dict[str, Any]:
        """The JSON row: the table's columns, then evicted, notes and problems."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ROW_KEYS}
        out["evicted"] = self.evicted
        out["notes"] = dict(self.notes)
        out["problems"] = list(self.problems)
        return out


def spool_problems(path: str) -> list[str]:
    """Consistency checks of a spool file after a crash (empty list: consistent).

    integrity_check passes; every row's counter is at or below its device's
    replay counter (rows and counters were committed together); and the
    persisted counters add up: accepted - acked - evicted == rows.
    """
    problems: list[str] = []
    db = sqlite3.connect(path, timeout=10)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"integrity_check: {check}")
        replay = dict(db.execute("SELECT device_id, fcnt FROM replay").fetchall())
        for dev, top in db.execute("SELECT device_id, max(fcnt) FROM rows GROUP BY device_id"):
            if dev not in replay or replay[dev] < top:
                problems.append(f"device {dev:08x}: row fcnt {top} above replay counter "
                                f"{replay.get(dev)}")
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        rows = int(db.execute("SELECT count(*) FROM rows").fetchone()[0])
        balance = meta["accepted_total"] - meta["acked_total"] - meta["evicted_total"]
        if balance != rows:
            problems.append(f"counters say {balance} rows, the table holds {rows}")
    finally:
        db.close()
    return problems


def key_leaks(texts: dict[str, str], secrets: Sequence[bytes | str]) -> list[str]:
    """Which secrets (keys as hex and base64, passwords) appear in which texts."""
    found: list[str] = []
    needles: list[str] = []
    for secret in secrets:
        if isinstance(secret, bytes):
            needles += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()]
        else:
            needles.append(secret)
    for name, text in texts.items():
        for needle in needles:
            if needle and needle in text:
                found.append(f"{name} contains a secret ({needle[:6]}...)")
                break
    return found

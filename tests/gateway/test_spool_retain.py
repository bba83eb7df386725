"""Whether a row is published retained is stored with the row (spool schema 4:
a message stored as is has ``[topic, kind, true]`` as its context when retained)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.spool import SCHEMA_VERSION, Accepted, Spool
from tests.gateway.test_spool_compact import V3_SCHEMA


def accepted(topic: str, *, retain: bool = False, fcnt: int = 1) -> Accepted:
    """A row on ``topic``."""
    return Accepted(device_id=1, fcnt=fcnt, kind="water_meter", topic=topic, payload=b"{}",
                    alarm=retain, received_at=1.0e9, retain=retain)


def test_retain_round_trips_through_the_spool(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**7, max_age_s=10**9)
    try:
        spool.accept([accepted("k/water_meter/00000001/up"),
                      accepted("k/water_meter/00000001/condition", retain=True, fcnt=0),
                      accepted("k/water_meter/00000001/state", retain=True, fcnt=2)])
        assert [(r.topic.rsplit("/", 1)[1], r.retain) for r in spool.pending(10)] == [
            ("up", False), ("condition", True), ("state", True)]
    finally:
        spool.close()


def test_a_version_3_file_gets_retain_from_the_old_topic_rule(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.executescript(V3_SCHEMA)
    rows = [(1, 5, "water_meter", "k/water_meter/00000001/up", b"{}", 0, 1.0e9, 90),
            (1, 0, "water_meter", "k/water_meter/00000001/condition", b"{}", 1, 1.0e9, 97)]
    db.executemany("INSERT INTO rows (device_id, fcnt, kind, topic, payload, alarm, "
                   "received_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("INSERT INTO replay VALUES (1, 5)")
    db.commit()
    db.close()
    spool = Spool(str(path), max_bytes=10**7, max_age_s=10**9)
    try:
        assert spool._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert [(r.fcnt, r.retain) for r in spool.pending(10)] == [(5, False), (0, True)]
        assert spool.counters() == {1: 5} and spool.stats()["depth"] == 2
    finally:
        spool.close()

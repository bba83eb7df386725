"""Whether a row is published retained is stored with the row (spool schema 4:
its context is ``[topic, kind, true]`` when retained, for a message stored as is
and for a reading stored deflated alike)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from knute.gateway.spool import SCHEMA_VERSION, Accepted, Spool
from knute.gateway.spool_schema import FORM_DEFLATED
from tests.gateway.test_spool_compact import V3_SCHEMA, reading


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


def test_a_stored_reading_keeps_its_retain_flag_and_bytes_across_a_reopen(
        tmp_path: Path) -> None:
    # A reading is stored deflated (form 2): its retain flag rides in the same
    # context as a message stored as is, and survives closing the file.
    r = reading("water_meter", {"index": 1234, "profile_end_h": 3, "battery": 19,
                                "profile": [1, 2]}, device_id=1, fcnt=9)
    built = r.json(0)
    item = Accepted(device_id=1, fcnt=9, kind=r.kind, topic=r.topic(), payload=built,
                    alarm=False, received_at=r.received_at, reading=r, retain=True)
    path = tmp_path / "s.db"
    spool = Spool(str(path), max_bytes=10**7, max_age_s=10**10)
    try:
        spool.accept([item, replace(item, fcnt=10, retain=False, payload=b"")])
    finally:
        spool.close()
    spool = Spool(str(path), max_bytes=10**7, max_age_s=10**10)
    try:
        rows = spool.pending(10)
        assert [(row.fcnt, row.retain) for row in rows] == [(9, True), (10, False)]
        assert rows[0].payload == built and rows[0].topic == r.topic()
        forms = {form for form, in spool._db.execute("SELECT form FROM ctx")}
        assert forms == {FORM_DEFLATED}
    finally:
        spool.close()

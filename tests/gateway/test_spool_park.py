"""gateway.spool parking: rows that must not block the queue are moved aside, bounded."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from knute.gateway.spool import SCHEMA_VERSION, Accepted, Spool, read_parked, row_size


def item(device: int, fcnt: int, size: int = 100) -> Accepted:
    head = f"{device}:{fcnt}:".encode()
    return Accepted(device_id=device, fcnt=fcnt, kind="water_meter",
                    topic=f"knute/water_meter/{device:08x}/up",
                    payload=head + b"x" * max(0, size - len(head)), alarm=False,
                    received_at=time.time())


def open_spool(path: Path, **kw: object) -> Spool:
    args: dict[str, object] = {"max_bytes": 10**9, "max_age_s": 10**9}
    args.update(kw)
    return Spool(str(path), **args)  # type: ignore[arg-type]


def test_park_moves_rows_out_of_the_queue_and_keeps_them(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.accept([item(1, 1), item(1, 2), item(2, 1)])
    first, second, third = spool.pending(10)
    assert spool.park([second.row_id, 999_999], "refused by broker (packet too large)") == 1
    assert spool.park([second.row_id], "again") == 0           # already parked: ignored
    assert [r.row_id for r in spool.pending(10)] == [first.row_id, third.row_id]
    stats = spool.stats()
    assert stats["depth"] == 2 and stats["parked"] == 1 and stats["parked_total"] == 1
    assert stats["parked_bytes"] == row_size(second.topic, second.payload)
    assert stats["bytes"] == row_size(first.topic, first.payload) * 2
    (parked,) = spool.parked()
    assert (parked.row_id, parked.device_id, parked.fcnt, parked.topic, parked.payload) == \
        (second.row_id, 1, 2, second.topic, second.payload)
    assert parked.reason == "refused by broker (packet too large)"
    # The replay counter is not touched: the frame was accepted; parking is delivery.
    assert spool.counters() == {1: 2, 2: 1}
    assert spool.ack([second.row_id]) == 0
    spool.close()
    again = open_spool(tmp_path / "s.db")
    assert again.stats()["parked"] == 1 and again.stats()["parked_total"] == 1
    assert [r.row_id for r in again.parked()] == [second.row_id]
    again.close()
    count, rows = read_parked(str(tmp_path / "s.db"))
    assert count == 1 and rows[0].reason.startswith("refused")


def test_parked_rows_are_bounded_oldest_dropped_first(tmp_path: Path) -> None:
    one = row_size(item(1, 0).topic, item(1, 0).payload)
    spool = open_spool(tmp_path / "s.db", max_parked_bytes=3 * one)
    spool.accept([item(1, n) for n in range(6)])
    ids = [r.row_id for r in spool.pending(10)]
    for row_id in ids[:5]:
        assert spool.park([row_id], f"test {row_id}") == 1
    stats = spool.stats()
    assert stats["parked"] == 3 and stats["parked_bytes"] == 3 * one
    assert stats["parked_total"] == 5 and stats["parked_dropped"] == 2
    assert [r.row_id for r in spool.parked()] == ids[4:1:-1]       # newest first
    assert [r.row_id for r in spool.pending(10)] == ids[5:]
    spool.close()


V2_SCHEMA = """
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX rows_age ON rows(received_at);
CREATE TABLE replay (device_id INTEGER PRIMARY KEY, fcnt INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
PRAGMA user_version = 2;
"""


def test_migrates_a_version_2_file_and_parks_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(V2_SCHEMA)
    topic = "city/water_meter/00000007/up"
    db.execute("INSERT INTO rows (device_id, fcnt, kind, topic, payload, alarm, received_at, "
               "size) VALUES (7, 1, 'water_meter', ?, ?, 0, ?, ?)",
               (topic, b'{"a":1}', time.time(), row_size(topic, b'{"a":1}')))
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("accepted_total", 1),
                                                     ("acked_total", 0)])
    db.commit()
    db.close()
    assert read_parked(str(path)) == (0, [])
    spool = open_spool(path)
    assert spool._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    stats = spool.stats()
    assert stats["depth"] == 1 and stats["parked"] == 0 and stats["parked_total"] == 0
    (row,) = spool.pending(10)
    assert spool.park([row.row_id], "too large") == 1
    assert spool.parked()[0].payload == b'{"a":1}' and spool.stats()["depth"] == 0
    spool.close()

"""gateway.spool: acceptance, order, acks, bounds, schema migration and recovery."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from knute.gateway.spool import (
    ROW_OVERHEAD,
    SCHEMA_VERSION,
    AcceptBatcher,
    Accepted,
    Spool,
    SpoolError,
    row_size,
)


def item(device: int, fcnt: int, *, alarm: bool = False, size: int = 100,
         at: float | None = None) -> Accepted:
    """One row with a payload of ``size`` bytes that names its device and counter."""
    head = f"{device}:{fcnt}:".encode()
    return Accepted(device_id=device, fcnt=fcnt, kind="water_meter",
                    topic=f"knute/water_meter/{device:08x}/up",
                    payload=head + b"x" * max(0, size - len(head)), alarm=alarm,
                    received_at=time.time() if at is None else at)


def open_spool(path: Path, **kw: object) -> Spool:
    args: dict[str, object] = {"max_bytes": 10**9, "max_age_s": 10**9}
    args.update(kw)
    return Spool(str(path), **args)  # type: ignore[arg-type]


def all_rows(spool: Spool) -> list[tuple[int, int]]:
    return [(r.device_id, r.fcnt) for r in spool.pending(10**9)]


def test_accept_pending_ack_and_counters(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.accept([item(1, 5), item(2, 1), item(1, 6)])
    spool.accept([item(2, 2), item(3, 0, alarm=True)])
    assert spool.counters() == {1: 6, 2: 2, 3: 0}
    assert spool.last_fcnt(1) == 6 and spool.last_fcnt(9) is None
    rows = spool.pending(10)
    assert [(r.device_id, r.fcnt) for r in rows] == [(1, 5), (2, 1), (1, 6), (2, 2), (3, 0)]
    assert rows[0].payload.startswith(b"1:5:") and rows[4].alarm and not rows[0].alarm
    assert [r.row_id for r in spool.pending(2, after_id=rows[1].row_id)] == \
        [rows[2].row_id, rows[3].row_id]
    assert spool.ack([rows[0].row_id, rows[2].row_id, 999_999]) == 2
    assert spool.ack([rows[0].row_id]) == 0                 # already gone
    assert all_rows(spool) == [(2, 1), (2, 2), (3, 0)]
    stats = spool.stats()
    assert stats["depth"] == 3 and stats["accepted_total"] == 5 and stats["acked_total"] == 2
    assert stats["bytes"] == sum(row_size(r.topic, r.payload) for r in spool.pending(10))
    # Counters are a max per device and survive the rows being acknowledged.
    spool.accept([item(1, 3)])
    assert spool.counters()[1] == 6
    spool.reset_counter(1)
    assert 1 not in spool.counters()
    spool.close()
    again = open_spool(tmp_path / "s.db")
    assert again.counters() == {2: 2, 3: 0}
    assert again.stats()["acked_total"] == 2 and again.stats()["depth"] == 4
    again.close()


def test_row_ids_are_never_reused(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.accept([item(1, 1)])
    first = spool.pending(1)[0].row_id
    spool.ack([first])
    spool.close()
    spool = open_spool(tmp_path / "s.db")
    spool.accept([item(1, 2)])
    assert spool.pending(1)[0].row_id > first
    spool.close()


def test_size_bound_evicts_oldest_routine_then_alarms(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    per_row = row_size(item(1, 0).topic, item(1, 0).payload)
    spool = open_spool(tmp_path / "s.db", max_bytes=10 * per_row)
    spool.accept([item(1, 0, alarm=True)] + [item(2, n) for n in range(9)])
    assert spool.stats()["evicted_total"] == 0
    with caplog.at_level(logging.WARNING, logger="knute.spool"):
        spool.accept([item(3, 0), item(3, 1)])
    assert all_rows(spool) == [(1, 0)] + [(2, n) for n in range(2, 9)] + [(3, 0), (3, 1)]
    assert spool.stats()["evicted_size_routine"] == 2
    assert "evicted 2 rows" in caplog.text
    # Ten alarms: every routine row goes before the first alarm does.
    spool.accept([item(4, n, alarm=True) for n in range(10)])
    rows = spool.pending(100)
    assert all(r.alarm for r in rows) and len(rows) == 10
    assert [(r.device_id, r.fcnt) for r in rows] == [(4, n) for n in range(10)]
    stats = spool.stats()
    assert stats["evicted_size_alarm"] == 1 and stats["evicted_size_routine"] == 11
    assert stats["evicted_total"] == 12 and stats["bytes"] <= 10 * per_row
    spool.close()
    again = open_spool(tmp_path / "s.db", max_bytes=10 * per_row)
    assert again.stats()["evicted_total"] == 12          # persisted
    again.close()


def test_age_bound(tmp_path: Path) -> None:
    now = [1_000_000.0]
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=3600,
                  clock=lambda: now[0])
    now[0] += 1.0                   # the age bound is applied at most once a second
    spool.accept([item(1, 0, at=now[0] - 7200), item(1, 1, alarm=True, at=now[0] - 7200),
                  item(1, 2, at=now[0] - 60)])
    assert all_rows(spool) == [(1, 2)]
    assert spool.stats()["evicted_age_routine"] == 1
    assert spool.stats()["evicted_age_alarm"] == 1
    now[0] += 3600
    spool.close()
    # Opening applies the age bound at once.
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**9, max_age_s=3600,
                  clock=lambda: now[0])
    assert all_rows(spool) == [] and spool.stats()["evicted_total"] == 3
    assert spool.stats()["oldest_age_s"] == 0
    spool.close()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SpoolError):
        Spool(str(tmp_path / "a.db"), max_bytes=1, max_age_s=1, fsync="sometimes")
    with pytest.raises(SpoolError):
        Spool(str(tmp_path / "b.db"), max_bytes=0, max_age_s=1)


def test_wal_and_fsync_pragmas(tmp_path: Path) -> None:
    for fsync, level in (("full", 2), ("normal", 1)):
        spool = open_spool(tmp_path / f"{fsync}.db", fsync=fsync)
        assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == level
        spool.accept([item(1, 1)])
        spool.ack([spool.pending(1)[0].row_id])
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == level
        spool.close()


V1_SCHEMA = """
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE replay (device_id INTEGER PRIMARY KEY, fcnt INTEGER NOT NULL);
PRAGMA user_version = 1;
"""


def test_migrates_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.executemany("INSERT INTO rows (device_id, fcnt, topic, payload, alarm, received_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [(7, 1, "city/water_meter/00000007/up", b'{"a":1}', 0, time.time()),
                    (8, 4, "city/air_quality/00000008/up", b'{"b":22}', 1, time.time()),
                    (7, 2, "city/water_meter/00000007/up", b'{"a":2}', 0, time.time())])
    db.execute("DELETE FROM rows WHERE fcnt = 1")   # the sequence is ahead of max(id)
    db.executemany("INSERT INTO replay VALUES (?, ?)", [(7, 2), (8, 4), (9, 100)])
    db.commit()
    db.close()

    spool = open_spool(path)
    assert spool._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rows = spool.pending(10)
    assert [(r.device_id, r.fcnt, r.kind, r.alarm) for r in rows] == \
        [(8, 4, "air_quality", True), (7, 2, "water_meter", False)]
    assert rows[0].payload == b'{"b":22}'
    assert spool.counters() == {7: 2, 8: 4, 9: 100}
    expected = sum(len(r.topic) + len(r.payload) + ROW_OVERHEAD for r in rows)
    assert spool.stats()["bytes"] == expected and spool.stats()["evicted_total"] == 0
    spool.accept([item(7, 3)])
    assert spool.pending(10)[-1].row_id > 3         # ids continue past every old one
    spool.close()


@pytest.mark.parametrize(("statement", "message"), [
    ("PRAGMA user_version = 99", "newer"),
    ("CREATE TABLE invoices (n INTEGER)", "not a knute spool"),
])
def test_refuses_newer_schema_and_foreign_files(tmp_path: Path, statement: str,
                                                message: str) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute(statement)
    db.close()
    with pytest.raises(SpoolError, match=message):
        open_spool(path)


def test_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    # Not an SQLite file at all: not a damaged spool, so it is neither moved nor replaced.
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database " * 500)
    with pytest.raises(SpoolError, match="not a knute spool database: it is a text file"):
        open_spool(path)
    assert os.listdir(tmp_path) == ["s.db"]
    assert path.read_bytes().startswith(b"this is not a database")


def test_damaged_file_keeps_what_can_be_read(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path)
    for start in range(0, 2000, 100):
        spool.accept([item(n % 10, n, size=300) for n in range(start, start + 100)])
    counters = spool.counters()
    original = {(r.device_id, r.fcnt): r.payload for r in spool.pending(10**9)}
    spool.close()
    page = 4096
    size = path.stat().st_size
    with path.open("r+b") as fh:                  # trash a run of pages in the middle
        fh.seek((size // page // 2) * page)
        fh.write(b"\xa5" * page * 8)
    with caplog.at_level(logging.ERROR, logger="knute.spool"):
        spool = open_spool(path)
    assert any(".corrupt-" in p for p in os.listdir(tmp_path))
    assert "salvaged" in caplog.text
    kept = {(r.device_id, r.fcnt): r.payload for r in spool.pending(10**9)}
    assert 0 < len(kept) < len(original)
    assert all(original[key] == payload for key, payload in kept.items())
    # The replay counters are kept (read from the replay table or from the rows).
    assert all(spool.counters().get(dev, -1) >= 0 for dev in counters)
    spool.close()


def test_accept_batcher_commits_by_count_and_by_window(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    committed: list[int] = []
    done = threading.Event()

    def on_commit(batch: object) -> None:
        committed.append(len(batch))  # type: ignore[arg-type]
        done.set()

    batcher = AcceptBatcher(spool, window_s=0.05, max_frames=4, on_commit=on_commit)
    for n in range(4):
        batcher.add(item(1, n))
    assert committed == [4] and batcher.waiting() == 0    # full batch, committed in add()
    batcher.add(item(1, 4))
    assert batcher.waiting() == 1 and all_rows(spool)[-1] == (1, 3)   # not accepted yet
    done.clear()
    batcher.start()
    assert done.wait(10)
    assert committed == [4, 1] and all_rows(spool)[-1] == (1, 4)
    batcher.add_many([item(2, 0), item(2, 1)])
    batcher.stop()                                         # flushes what is waiting
    assert committed[-1] == 2 and spool.counters() == {1: 4, 2: 1}
    spool.close()


def test_failed_commit_raises_and_accepts_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.accept([item(1, 1)])
    other = sqlite3.connect(tmp_path / "s.db", timeout=0)
    other.execute("BEGIN IMMEDIATE")          # hold the write lock
    spool._db.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(SpoolError, match="accept failed"):
        spool.accept([item(1, 2)])
    other.rollback()
    other.close()
    assert spool.counters() == {1: 1} and spool.stats()["depth"] == 1
    assert spool.stats()["accepted_total"] == 1
    spool.close()

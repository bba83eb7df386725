"""gateway/dbfile.py: damage versus trouble, bounded salvage queries, moving aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from knute.gateway.dbfile import CorruptFile, bound_queries, is_corruption, move_aside, quick_check

ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")


def test_a_query_past_the_deadline_is_interrupted() -> None:
    db = sqlite3.connect(":memory:")
    bound_queries(db, 0.2)
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        db.execute(ENDLESS).fetchone()


def test_corruption_is_told_from_a_busy_or_full_database(tmp_path: Path) -> None:
    garbage = tmp_path / "not.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as err:
        sqlite3.connect(garbage).execute("SELECT * FROM sqlite_master").fetchall()
    assert is_corruption(err.value)
    assert is_corruption(CorruptFile("quick_check: bad"))
    assert not is_corruption(sqlite3.OperationalError("database is locked"))


def test_quick_check_and_move_aside(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    quick_check(db)                                   # a sound file passes
    db.close()
    (tmp_path / "spool.db-wal").write_bytes(b"")
    moved = Path(move_aside(str(path)))
    assert moved.name.startswith("spool.db.corrupt-")
    assert not path.exists() and moved.exists() and Path(f"{moved}-wal").exists()
    again = Path(move_aside(str(path)))               # nothing left to move: a new name
    assert again != moved

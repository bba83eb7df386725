"""What the spool and the registry share about their SQLite files: telling damage
from trouble, checking a file, and moving a damaged one aside for the operator."""

from __future__ import annotations

import os
import sqlite3
import time

# SQLite primary result codes that mean the file itself is damaged (not busy,
# locked, read-only or on a full disk: those must never move a file aside).
_CORRUPT_CODES = (11, 26)       # SQLITE_CORRUPT, SQLITE_NOTADB


class CorruptFile(sqlite3.DatabaseError):
    """PRAGMA quick_check found damage in an SQLite file."""


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True if ``exc`` says the database file is damaged or is not a database."""
    if isinstance(exc, CorruptFile):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPT_CODES


def quick_check(db: sqlite3.Connection) -> None:
    """Raise CorruptFile unless ``PRAGMA quick_check`` says the file is fine."""
    row = db.execute("PRAGMA quick_check").fetchone()
    if row is None or row[0] != "ok":
        raise CorruptFile(f"quick_check: {row[0] if row else 'no answer'}")


def move_aside(path: str) -> str:
    """Rename a database file and its WAL/SHM companions; returns the new main path.

    The new name is ``<path>.corrupt-<UTC time>``: kept for the operator to
    look at, never read again by the gateway.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target


SALVAGE_LIMIT_S = 15.0


def bound_queries(db: sqlite3.Connection, seconds: float = SALVAGE_LIMIT_S) -> float:
    """Interrupt any query on ``db`` that runs past ``seconds`` from now; the deadline.

    Reading a damaged file can send a B-tree scan in circles; salvage must end
    and let the gateway start with what it has.
    """
    deadline = time.monotonic() + seconds
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return deadline

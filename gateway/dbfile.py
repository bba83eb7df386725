"""What the spool and the registry share about their SQLite files: telling damage
from trouble, checking a file, and moving a damaged one aside for the operator.

Before either opener treats a file as a damaged knute database it calls
``check_identity``: a file that does not start with the SQLite header, or whose
header names another application or the other knute database, is refused with
one line that says what the file looks like, and is never renamed or replaced
(a configuration file passed as ``--registry`` stays where it is). Each knute
database carries its own ``PRAGMA application_id``; files made before that have
0 there and are recognised by their schema version.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from knute.gateway.errors import KnuteError

SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100
# PRAGMA application_id of knute's databases (ASCII "knRg" and "knSp").
REGISTRY_APP_ID = 0x6B6E5267
SPOOL_APP_ID = 0x6B6E5370
_APP_NAMES = {REGISTRY_APP_ID: "registry", SPOOL_APP_ID: "spool"}


class NotKnuteFile(KnuteError):
    """The file is not a knute database of the expected kind; it was left untouched."""


def _describe(head: bytes) -> str:
    """What a non-SQLite file looks like, from its first bytes."""
    if not head:
        return "an empty file"
    sample = head[:64]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0] if text.strip() else ""
        if first.startswith("[") or " = " in first:
            kind = "a text file (TOML, such as a gateway configuration?)"
        elif "," in first:
            kind = "a text file (CSV?)"
        else:
            kind = "a text file"
        return f"{kind} starting with {first[:40]!r}"
    return f"binary data starting with {sample[:8].hex(' ')}"


def check_identity(path: str, what: str, app_id: int, max_version: int) -> None:
    """Refuse (NotKnuteFile) a file at ``path`` that is not a knute ``what`` database.

    A missing or empty file passes (it is about to be created). So does an
    SQLite file whose header carries ``app_id``, or no application id and a
    ``user_version`` of 0..``max_version`` (a fresh file or one made before the
    application id; the opener checks its tables). Anything else is not ours:
    the message says what it looks like, and nothing is renamed.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_SIZE)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise NotKnuteFile(f"{what} {path} is a directory, not a knute {what} "
                           "database") from None
    except OSError as exc:
        raise KnuteError(f"{what} {path}: {exc.strerror}") from None
    if not head:
        return
    if len(head) < _HEADER_SIZE or not head.startswith(SQLITE_MAGIC):
        raise NotKnuteFile(f"{what} {path} is not a knute {what} database: it is "
                           f"{_describe(head)}; left unchanged (check the path)")
    found_id, = struct.unpack(">I", head[68:72])
    if found_id == 0:
        # The header on disk may be older than the file: in WAL mode the first
        # pages (application_id, user_version) can still sit in the -wal file.
        # SQLite itself, read-only, gives the current values.
        current = _read_identity(path)
        if current is None:
            return              # unreadable: the opener tells damage from trouble
        found_id, user_version, tables = current
    else:
        user_version, tables = 0, []
    if found_id == app_id:
        return
    if found_id in _APP_NAMES:
        raise NotKnuteFile(f"{what} {path} is a knute {_APP_NAMES[found_id]}, not a "
                           f"{what}; left unchanged (check the path)")
    if found_id != 0:
        raise NotKnuteFile(f"{what} {path} is the SQLite database of another application "
                           f"(application_id 0x{found_id:08x}); left unchanged")
    if user_version > max_version:
        if user_version <= _PLAUSIBLE_VERSION:
            return              # a newer knute file: the opener says "upgrade"
        raise NotKnuteFile(f"{what} {path} is an SQLite database but not a knute {what} "
                           f"(user_version {user_version}); left unchanged")
    if user_version == 0 and tables:
        raise NotKnuteFile(f"{what} {path} is an SQLite database but not a knute {what} "
                           f"(tables: {', '.join(tables[:5])}); left unchanged")


_PLAUSIBLE_VERSION = 100        # above this a user_version is not one of knute's


def _read_identity(path: str) -> tuple[int, int, list[str]] | None:
    """(application_id, user_version, tables) read through SQLite, read-only; None
    when the file cannot be read that way (damaged, locked, no -shm access)."""
    import urllib.parse  # here: it brings ipaddress; only a header without an id comes here

    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        # One read transaction: the three answers come from one snapshot. Read one by
        # one, a creator committing in between (tables, user_version and application_id
        # in one transaction) would show its tables without its id.
        db.execute("BEGIN")
        app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                          "ORDER BY name").fetchall()
        db.rollback()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return app_id, version, [str(r[0]) for r in rows]


# SQLite primary result codes that mean the file itself is damaged (not busy,
# locked, read-only or on a full disk: those must never move a file aside).
_CORRUPT_CODES = (11, 26)       # SQLITE_CORRUPT, SQLITE_NOTADB


@contextmanager
def immediate(db: sqlite3.Connection, lock: threading.Lock | threading.RLock
              ) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on ``db`` (opened with autocommit off,
    ``isolation_level=None``) under ``lock``: committed on success, rolled back on error.
    Processes sharing the file serialise on it; threads sharing ``db`` on ``lock``."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


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


class DataLock:
    """An exclusive lock that one gateway holds on its spool for as long as it runs.

    The lock is ``flock`` on ``<spool>.lock`` (the pid of the holder written in it
    for the operator): the kernel drops it when the process ends, kill -9
    included, so a stale file never blocks a restart. A second gateway on the
    same spool gets one clear error instead of running beside the first one.
    """

    def __init__(self, spool_path: str) -> None:
        self.path = spool_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise KnuteError naming the gateway that holds it."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise KnuteError(f"lock {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = holder_pid(self.path)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise KnuteError(f"spool {self.path[:-5]} is in use by another gateway ({who}, "
                             f"lock {self.path}); one gateway per data directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def held_elsewhere(self) -> int | None:
        """The pid of a running gateway holding the lock (0 if unknown), else None."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return holder_pid(self.path) or 0
        finally:
            os.close(fd)
        return None

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race a new holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(lock_path: str) -> int | None:
    """The pid written in a lock file, or None."""
    try:
        with open(lock_path, encoding="ascii") as fh:
            text = fh.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None

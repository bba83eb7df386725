"""The spool's rows in Python: what goes in (Accepted), what comes out (Row,
ParkedRow), and how a row is stored and read back (forms, see gateway.spool_schema).

Also the file-level helpers of the spool: creating it 0600, the disk reserve,
recognising SQLITE_FULL, and reading the parked rows of a file read-only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from knute.gateway.errors import KnuteError
from knute.gateway.model import Accepted as Accepted  # re-exported: the spool takes these
from knute.gateway.model import Row as Row
from knute.gateway.spool_schema import FORM_DEFLATED, FORM_MESSAGE, ROW_OVERHEAD, deflate, inflate

log = logging.getLogger("knute.spool")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class SpoolError(KnuteError):
    """The spool cannot do what was asked (disk full, newer schema, I/O error)."""


class ParkedRow(NamedTuple):
    """One parked row: taken out of the delivery queue, kept for inspection."""

    row_id: int
    device_id: int
    fcnt: int
    kind: str
    topic: str
    payload: bytes
    alarm: bool
    received_at: float
    reason: str
    parked_at: float


def row_size(topic: str, payload: bytes) -> int:
    """The bytes a finished message's row counts against ``max_bytes``."""
    return len(topic.encode()) + len(payload) + ROW_OVERHEAD


class Stored(NamedTuple):
    """A row as read from the table, before its message is built."""

    row_id: int
    device_id: int
    fcnt: int
    epoch: int
    ctx: int
    body: bytes
    alarm: bool
    received_at: float
    size: int


STORED_COLUMNS = "id, device_id, fcnt, epoch, ctx, body, alarm, received_at, size"


def stored_row(r: tuple[Any, ...]) -> Stored:
    """A ``Stored`` from a row of ``SELECT STORED_COLUMNS``."""
    return Stored(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), bytes(r[5]),
                   bool(r[6]), float(r[7]), int(r[8]))


class ContextTable:
    """The ``ctx`` table's rows by (form, text) and by id, cached (at most 4,096 each)."""

    MAX_CACHED = 4096

    def __init__(self) -> None:
        self._ids: dict[tuple[int, str], int] = {}
        self._texts: dict[int, tuple[int, str]] = {}
        self._parsed: dict[int, tuple[int, str, str, bool]] = {}

    def id_of(self, db: sqlite3.Connection, form: int, text: str) -> int:
        """The context row of (form, text), inserted if new (inside a transaction)."""
        key = (form, text)
        found = self._ids.get(key)
        if found is not None:
            return found
        row = db.execute("SELECT id FROM ctx WHERE form = ? AND text = ?", key).fetchone()
        if row is None:
            cur = db.execute("INSERT INTO ctx (form, text) VALUES (?, ?)", key)
            assert cur.lastrowid is not None
            ctx = int(cur.lastrowid)
        else:
            ctx = int(row[0])
        if len(self._ids) >= self.MAX_CACHED:
            self._ids.clear()
        self._ids[key] = ctx
        return ctx

    def text_of(self, db: sqlite3.Connection, ctx: int) -> tuple[int, str] | None:
        """(form, text) of a context row, None if there is none."""
        found = self._texts.get(ctx)
        if found is None:
            row = db.execute("SELECT form, text FROM ctx WHERE id = ?", (ctx,)).fetchone()
            if row is None:
                return None
            found = (int(row[0]), str(row[1]))
            if len(self._texts) >= self.MAX_CACHED:
                self._texts.clear()
            self._texts[ctx] = found
        return found

    def parsed(self, db: sqlite3.Connection, ctx: int) -> tuple[int, str, str, bool] | None:
        """(form, topic, kind, retain) of a context row; None if missing or unreadable."""
        found = self._parsed.get(ctx)
        if found is None:
            entry = self.text_of(db, ctx)
            if entry is None:
                return None
            try:
                topic, kind, retain = parse_context(entry[1])
            except (ValueError, TypeError):
                return None
            found = (entry[0], topic, kind, retain)
            if len(self._parsed) >= self.MAX_CACHED:
                self._parsed.clear()
            self._parsed[ctx] = found
        return found

    def forget(self) -> None:
        """Drop the cache (after a rollback: ids handed out in it are gone)."""
        self._ids.clear()
        self._texts.clear()
        self._parsed.clear()


# What render_rows needs of a row (the drain reads it, 512 rows at a time).
RENDER_COLUMNS = "id, device_id, fcnt, ctx, body, alarm, received_at"


def render_rows(raw: Sequence[tuple[Any, ...]],
                contexts: dict[int, tuple[int, str, str, bool] | None],
                max_message_bytes: int) -> tuple[list[Row], dict[str, list[int]]]:
    """The rows (``SELECT RENDER_COLUMNS``) as the forwarder publishes them, and the ids
    of those that must be parked instead, by reason (over the bound, unreadable).

    Once per row of a drain: the common row (deflated, within the bound) takes
    one branch, and the Row is built by ``tuple.__new__`` (what its generated
    ``__new__`` does, without the extra Python call).
    """
    out: list[Row] = []
    bad: dict[str, list[int]] = {}
    make = tuple.__new__
    for row_id, device_id, fcnt, ctx, body, alarm, received_at in raw:
        entry = contexts.get(ctx)
        if entry is None:
            bad.setdefault(f"context {ctx} of the row is missing or unreadable",
                           []).append(row_id)
            continue
        form, topic, kind, retain = entry
        if form == FORM_DEFLATED:
            try:
                payload = inflate(body)
            except (zlib.error, ValueError) as exc:
                bad.setdefault(f"stored row unreadable: {exc}", []).append(row_id)
                continue
        elif form == FORM_MESSAGE:
            payload = bytes(body)
        else:
            bad.setdefault(f"unknown row form {form}", []).append(row_id)
            continue
        if len(payload) > max_message_bytes:
            bad.setdefault(f"message of {len(payload)} bytes over max_message_bytes "
                           f"{max_message_bytes}", []).append(row_id)
            continue
        out.append(make(Row, (row_id, device_id, fcnt, kind, topic, payload, bool(alarm),
                              received_at, retain)))
    return out, bad


def store_form(item: Accepted, epoch: int) -> tuple[int, str, bytes]:
    """(form, context text, body) of an accepted item; a reading's JSON gets ``epoch``."""
    if item.reading is not None:
        reading = item.reading
        payload = (item.payload if item.payload and item.epoch == epoch
                   else reading.json(epoch))
        return (FORM_DEFLATED,
                message_context(item.topic or reading.topic(), reading.kind, item.retain),
                deflate(payload))
    return FORM_MESSAGE, message_context(item.topic, item.kind, item.retain), item.payload


def message_context(topic: str, kind: str, retain: bool) -> str:
    """The ctx text of a message: ``[topic, kind]``, with ``true`` third if it is retained."""
    return _dumps([topic, kind, True] if retain else [topic, kind])


def parse_context(text: str) -> tuple[str, str, bool]:
    """(topic, kind, retain) of a ctx text; ValueError or TypeError if it is not one."""
    topic, kind, *flags = json.loads(text)
    if flags not in ([], [True]):
        raise ValueError(f"unexpected context {text!r}")
    return str(topic), str(kind), flags == [True]


def message_of(s: Stored, ctx: tuple[int, str] | None) -> tuple[str | None, str, bytes]:
    """(topic, kind, payload) of a stored row, or (None, the problem, b"")."""
    if ctx is None:
        return None, f"context {s.ctx} of the row is missing", b""
    form, text = ctx
    try:
        topic, kind, _retain = parse_context(text)
        if form == FORM_DEFLATED:
            return topic, kind, inflate(s.body)
        if form != FORM_MESSAGE:
            raise ValueError(f"unknown row form {form}")
        return topic, kind, s.body
    except (zlib.error, ValueError, TypeError) as exc:
        return None, f"stored row unreadable: {exc}", b""


def create_private(path: str) -> None:
    """Create the spool file 0600 before SQLite opens it (its -wal/-shm follow its mode).

    A file an older gateway created readable by others (0644 under umask 022) is
    made 0600, with its -wal and -shm files.
    """
    if path == ":memory:":
        return
    if os.path.exists(path):
        for name in (path, path + "-wal", path + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name).st_mode & 0o077:
                    try:
                        os.chmod(name, 0o600)
                        log.info("spool %s: made private (mode 0600)", name)
                    except OSError as exc:
                        log.warning("spool %s: readable by others and cannot be made "
                                    "private: %s", name, exc.strerror)
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise SpoolError(f"spool {path}: cannot create: {exc.strerror}") from None
    os.close(fd)


PARKED_COLUMNS = ("id, device_id, fcnt, kind, topic, payload, alarm, received_at, reason, "
                   "parked_at")


def parked_row(r: tuple[Any, ...]) -> ParkedRow:
    return ParkedRow(int(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bytes(r[5]),
                     bool(r[6]), float(r[7]), str(r[8]), float(r[9]))


def read_parked(path: str, limit: int = 100) -> tuple[int, list[ParkedRow]]:
    """(parked row count, the ``limit`` most recently parked) of a spool file, read-only.

    Safe while the gateway runs (a read transaction in WAL mode blocks nobody).
    """
    if not os.path.exists(path):
        raise SpoolError(f"spool {path}: no such file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise SpoolError(f"spool {path}: {exc}") from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version < 3:
            return 0, []            # before parking existed: nothing parked
        count = int(db.execute("SELECT count(*) FROM parked").fetchone()[0])
        rows = db.execute(f"SELECT {PARKED_COLUMNS} FROM parked "
                          "ORDER BY parked_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return count, [parked_row(r) for r in rows]
    except sqlite3.Error as exc:
        raise SpoolError(f"spool {path}: cannot read parked rows: {exc}") from exc
    finally:
        db.close()


def make_reserve(path: str, want: int) -> None:
    """Hold ``want`` bytes of disk in ``path``, a file given back when the disk fills.

    With a full file system SQLite can neither commit (the WAL cannot grow)
    nor checkpoint (the database file cannot take the WAL's new pages), so
    not even an eviction could be written. The reserve is what makes room.
    """
    if not want:
        return
    with contextlib.suppress(OSError):
        if os.path.getsize(path) >= want:
            return
    try:
        with open(path, "wb") as fh:
            block = b"\0" * 65536
            for _ in range(0, want, len(block)):
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        log.warning("spool %s: cannot reserve %d bytes of disk (%s); a full disk may "
                    "then stop the spool until space is freed", path[:-len(".reserve")],
                    want, exc.strerror)
        with contextlib.suppress(OSError):
            os.unlink(path)


def is_disk_full(exc: sqlite3.Error) -> bool:
    """True for SQLITE_FULL (the file system, or a size limit, has no room)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == 13
    return "full" in str(exc)

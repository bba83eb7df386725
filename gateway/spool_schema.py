"""The spool's file format: schema, numbered migrations, and salvage of a damaged file.

Version history (``PRAGMA user_version``):

1. rows (id, device_id, fcnt, topic, payload, alarm, received_at) and replay.
2. rows gain kind and size, an age index, and the meta table of counters.
3. the parked table: rows taken out of the delivery queue, kept for inspection.
4. compact rows: a row's body is its message JSON deflated with a preset
   dictionary of typical readings (form 2), about a fifth of the JSON; the
   topic and kind move to a context row (``ctx``) shared by the device's
   rows, with ``true`` third when the message is published retained.
   Messages stored as they are (condition messages, rows migrated from
   version 3) are form 0. The replay table gains the device's ``epoch``, the
   number of times its counter was reset (an id names a reading per epoch;
   see gateway.message).

Every step is tested on a file made with the frozen older schema.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
import zlib
from collections.abc import Callable
from typing import Any

from knute.gateway.dbfile import SPOOL_APP_ID, bound_queries

log = logging.getLogger("knute.spool")

SCHEMA_VERSION = 4
ROW_OVERHEAD = 64          # bytes counted per row beyond its stored bytes (keys, index)
# ctx text of both forms: [topic, kind], or [topic, kind, true] for a retained message
FORM_MESSAGE = 0           # body: the message's JSON as published
FORM_DEFLATED = 2          # body: that JSON, deflate(DEFLATE_DICT)

# The preset dictionary of form 2: what readings have in common (two typical ones).
# Part of the file format: rows on disk depend on it, so it never changes; a better
# one would be a new form. A raw deflate stream with a 2 KiB window (the dictionary
# fits it) and memory level 1 costs little to set up for every row.
DEFLATE_DICT = (
    '{"id":"00002001:52211","device":"00002001","kind":"air_quality","fcnt":52211,'
    '"received_at":"2024-05-01T12:00:01.750Z","readings":{"pm1":{"value":5.2,"unit":'
    '"µg/m³"},"pm2_5":{"value":8.7,"unit":"µg/m³"},"pm10":{"value":14.3,"unit":"µg/m³"},'
    '"temperature":{"value":-3.5,"unit":"°C"},"humidity":{"value":64,"unit":"%"},'
    '"pressure":{"value":1013.2,"unit":"hPa"}},"alarms":[],"battery":null,"profile":[],'
    '"receivers":[{"source":"uart0"}],"gateway":"gw-1","source":"serial"}'
    '{"id":"00001234:1000","device":"00001234","kind":"water_meter","fcnt":1000,'
    '"received_at":"2024-05-01T12:00:00.250Z","readings":{"index":{"value":123456,'
    '"unit":"L"}},"alarms":["leak"],"battery":85,"profile":['
    '{"start":"2024-04-24T10:00:00Z","end":"2024-04-24T11:00:00Z","litres":0},'
    '{"start":"2024-04-24T11:00:00Z","end":"2024-04-24T12:00:00Z","litres":2},'
    '{"start":"2024-04-24T12:00:00Z","end":"2024-04-24T13:00:00Z","litres":31},'
    '{"start":"2024-04-24T13:00:00Z","end":"2024-04-24T14:00:00Z","litres":45},'
    '{"start":"2024-04-24T14:00:00Z","end":"2024-04-24T15:00:00Z","litres":12},'
    '{"start":"2024-04-24T15:00:00Z","end":"2024-04-24T16:00:00Z","litres":8}],'
    '"receivers":[{"source":"lora0","rssi_dbm":-97,"snr_db":7.5,"freq_hz":868100000,'
    '"sf":9},{"source":"pf-1","gateway_eui":"b827ebfffe6b1a2c","rssi_dbm":-112,'
    '"snr_db":-4.25,"freq_hz":868300000,"datr":"SF9BW125","chan":0,"tmst":3512348611,'
    '"time":"2024-05-01T12:00:00.000000Z"}],"gateway":"gw-1","source":"radio","site":'
    '{"site":"Storgata 12","address":"Storgata 12","lat":59.91,"lon":10.75}}'
).encode()
_WBITS = -11


# Streams primed with the dictionary once; each row copies one (cheaper than priming).
# Fixed Huffman codes (Z_FIXED): a reading's stream carries no code tables, so the
# forwarder's inflate, once per row while a backlog drains, builds none: 2.0 instead
# of 3.6 µs a row, for about 8 bytes more of a 130-byte body. Which codes a stream
# uses is the stream's own business: every row, old or new, inflates the same way.
_DEFLATER = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 1, zlib.Z_FIXED, DEFLATE_DICT)
_INFLATER = zlib.decompressobj(_WBITS, DEFLATE_DICT)


def deflate(payload: bytes) -> bytes:
    """The form-2 body of a message's JSON."""
    z = _DEFLATER.copy()
    return z.compress(payload) + z.flush()


def inflate(body: bytes) -> bytes:
    """The message JSON of a form-2 body; zlib.error or ValueError if it is damaged."""
    z = _INFLATER.copy()
    out = z.decompress(body, 1 << 24)
    if not z.eof or z.unused_data or z.unconsumed_tail:
        raise ValueError("deflate stream incomplete, too long or followed by other bytes")
    return out


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# The parked table is the same since version 3: one definition for the current
# schema and the 2 -> 3 migration.
PARKED_TABLE = """
CREATE TABLE parked (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL,
    size INTEGER NOT NULL,
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL
);
"""

_SCHEMA_V4 = """
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    fcnt INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    ctx INTEGER NOT NULL,
    body BLOB NOT NULL,
    alarm INTEGER NOT NULL,
    received_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX rows_age ON rows(received_at);
CREATE TABLE ctx (
    id INTEGER PRIMARY KEY,
    form INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (form, text)
);
CREATE TABLE replay (
    device_id INTEGER PRIMARY KEY,
    fcnt INTEGER NOT NULL,            -- -1: no counter (reset), the next frame starts one
    epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
""" + PARKED_TABLE

# Version 1 kept rows without kind and size, had no persisted counters, and
# no age index; its replay table is unchanged.
_MIGRATE_1_TO_2 = f"""
CREATE TABLE rows_v2 (
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
INSERT INTO rows_v2 (id, device_id, fcnt, kind, topic, payload, alarm, received_at, size)
    SELECT id, device_id, fcnt,
           -- the kind is the topic's second level: <prefix>/<kind>/<device>/up
           substr(topic, instr(topic, '/') + 1,
                  instr(substr(topic, instr(topic, '/') + 1), '/') - 1),
           topic, payload, alarm, received_at,
           length(CAST(topic AS BLOB)) + length(payload) + {ROW_OVERHEAD}
    FROM rows ORDER BY id;
DROP TABLE rows;
ALTER TABLE rows_v2 RENAME TO rows;
CREATE INDEX rows_age ON rows(received_at);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_MIGRATE_2_TO_3 = PARKED_TABLE


def _script(text: str) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        for statement in statements(text):
            db.execute(statement)
    return run


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """JSON rows become form-0 rows of the compact table; replay gains the epoch."""
    seq_row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'").fetchone()
    seq = int(seq_row[0]) if seq_row else 0
    db.execute("CREATE TABLE ctx (id INTEGER PRIMARY KEY, form INTEGER NOT NULL, "
               "text TEXT NOT NULL, UNIQUE (form, text))")
    db.execute("CREATE TEMP TABLE ctx_of (topic TEXT, kind TEXT, ctx INTEGER, "
               "PRIMARY KEY (topic, kind))")
    pairs = db.execute("SELECT DISTINCT topic, kind FROM rows").fetchall()
    for topic, kind in pairs:
        # Before version 4 the rows on a device's condition topic were published
        # retained (the forwarder went by the topic); now the row says so itself.
        text = _dumps([topic, kind, True] if topic.endswith("/condition") else [topic, kind])
        cur = db.execute("INSERT INTO ctx (form, text) VALUES (?, ?)", (FORM_MESSAGE, text))
        db.execute("INSERT INTO ctx_of VALUES (?, ?, ?)", (topic, kind, cur.lastrowid))
    db.execute("CREATE TABLE rows_v4 (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "device_id INTEGER NOT NULL, fcnt INTEGER NOT NULL, epoch INTEGER NOT NULL, "
               "ctx INTEGER NOT NULL, body BLOB NOT NULL, alarm INTEGER NOT NULL, "
               "received_at REAL NOT NULL, size INTEGER NOT NULL)")
    db.execute("INSERT INTO rows_v4 (id, device_id, fcnt, epoch, ctx, body, alarm, "
               "received_at, size) SELECT r.id, r.device_id, r.fcnt, 0, c.ctx, r.payload, "
               "r.alarm, r.received_at, r.size FROM rows r JOIN temp.ctx_of c "
               "ON c.topic = r.topic AND c.kind = r.kind ORDER BY r.id")
    db.execute("DROP TABLE temp.ctx_of")
    db.execute("DROP TABLE rows")
    db.execute("ALTER TABLE rows_v4 RENAME TO rows")
    db.execute("CREATE INDEX rows_age ON rows(received_at)")
    # Ids are never reused: the sequence continues past every id the old table handed out.
    if db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'rows'").fetchone():
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'rows'", (seq,))
    elif seq:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('rows', ?)", (seq,))
    db.execute("ALTER TABLE replay ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")


# MIGRATIONS[v] turns a version-v file into version v+1, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _script(_MIGRATE_1_TO_2),
    2: _script(_MIGRATE_2_TO_3),
    3: _migrate_3_to_4,
}


class SchemaError(Exception):
    """The file is newer than this gateway, or an SQLite file that is not a spool."""


def migrate(db: sqlite3.Connection, path: str, counter_keys: tuple[str, ...]) -> None:
    """Create the schema in an empty file or migrate an older one step by step."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise SchemaError(f"spool {path} has schema version {version}, newer than this "
                          f"gateway's {SCHEMA_VERSION}; upgrade the gateway")
    if version == 0:
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise SchemaError(f"{path} is an SQLite file but not a knute spool")
        db.execute("BEGIN IMMEDIATE")
        for statement in statements(_SCHEMA_V4):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
        version = SCHEMA_VERSION
    while version < SCHEMA_VERSION:
        log.info("spool %s: migrating schema %d -> %d", path, version, version + 1)
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version={version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version += 1
    if int(db.execute("PRAGMA application_id").fetchone()[0]) == 0:
        db.execute(f"PRAGMA application_id={SPOOL_APP_ID}")
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
                   [(key,) for key in counter_keys])
    # Contexts no row refers to any more (their rows were delivered or evicted).
    db.execute("DELETE FROM ctx WHERE id NOT IN (SELECT DISTINCT ctx FROM rows)")
    db.execute("COMMIT")


def statements(script: str) -> list[str]:
    """Split a DDL script into statements (no semicolons inside our statements)."""
    out = []
    for part in script.split(";"):
        lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
        text = "\n".join(lines).strip()
        if text:
            out.append(text)
    return out


# -- salvage of a damaged file ---------------------------------------------------------


def _padded_copy(path: str) -> str:
    """``path``, or a copy padded with zeros to the size its header states.

    A truncated file is unreadable as a whole (SQLite calls it malformed at the
    first query); padded back to its size, every page that survived reads
    again and only the missing ones are damaged.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
        size = os.path.getsize(path)
    except OSError:
        return path
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return path
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    want = int.from_bytes(head[28:32], "big") * page_size
    if want <= size:
        return path
    copy = path + ".salvage"
    try:
        shutil.copyfile(path, copy)
        with open(copy, "r+b") as fh:
            fh.truncate(want)
    except OSError:
        return path
    return copy


# A salvaged row: (device_id, fcnt, epoch, form, ctx text, body, alarm, received_at).
_ROWS_V4 = ("SELECT r.id, r.device_id, r.fcnt, r.epoch, c.form, c.text, r.body, r.alarm, "
            "r.received_at FROM rows r JOIN ctx c ON c.id = r.ctx WHERE r.id > ? ORDER BY r.id")
# (Condition rows were published retained before version 4, as _migrate_3_to_4 says.)
_ROWS_V2 = ("SELECT id, device_id, fcnt, 0, 0, CASE WHEN topic LIKE '%/condition' "
            "THEN json_array(topic, kind, json('true')) ELSE json_array(topic, kind) END, "
            "payload, alarm, received_at FROM rows WHERE id > ? ORDER BY id")


def _good(r: tuple[Any, ...]) -> bool:
    return (isinstance(r[1], int) and isinstance(r[2], int) and isinstance(r[3], int)
            and r[4] in (FORM_MESSAGE, FORM_DEFLATED) and isinstance(r[5], str)
            and isinstance(r[6], bytes) and isinstance(r[7], int)
            and isinstance(r[8], int | float))


def _read_rows(old: sqlite3.Connection, deadline: float) -> list[tuple[Any, ...]]:
    """Every row still readable, in id order, stepping over damaged pages.

    Ids must rise: a damaged page that hands out an id at or below one already
    read ends that scan (its cells are not trusted), and the scan resumes past it.
    """
    rows: list[tuple[Any, ...]] = []
    try:
        top = int(old.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'")
                  .fetchone()[0])
    except (sqlite3.Error, TypeError):
        top = None
    try:
        version = int(old.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        version = SCHEMA_VERSION
    query = _ROWS_V4 if version >= 4 else _ROWS_V2
    after, step = 0, 1
    while time.monotonic() < deadline:
        try:
            for r in old.execute(query, (after,)):
                if not isinstance(r[0], int) or r[0] <= after:
                    raise sqlite3.DatabaseError("row ids out of order")
                after, step = r[0], 1
                if _good(r):
                    rows.append(tuple(r[1:]))           # a damaged cell is left out
            return rows
        except sqlite3.Error:
            if top is None or after >= top:
                return rows
            after, step = after + step, step * 2
    return rows


def salvage(moved: str, db: sqlite3.Connection) -> None:
    """Copy what can still be read from a corrupt spool (rows, replay counters, epochs)."""
    source = _padded_copy(moved)
    try:
        old = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    counters: dict[int, tuple[int, int]] = {}
    rows: list[tuple[Any, ...]] = []
    deadline = bound_queries(old)
    try:
        for query in ("SELECT device_id, fcnt, epoch FROM replay",
                      "SELECT device_id, fcnt, 0 FROM replay"):
            try:
                for device_id, fcnt, epoch in old.execute(query):
                    was = counters.get(int(device_id), (-1, 0))
                    counters[int(device_id)] = (max(int(fcnt), was[0]), max(int(epoch), was[1]))
                break
            except sqlite3.Error:
                continue
        rows = _read_rows(old, deadline)
    finally:
        old.close()
        if source != moved:
            with contextlib.suppress(OSError):
                os.unlink(source)
    ctx_ids: dict[tuple[int, str], int] = {}
    out = []
    for device_id, fcnt, epoch, form, text, body, alarm, received_at in rows:
        was = counters.get(device_id, (-1, 0))
        if epoch == was[1]:
            counters[device_id] = (max(fcnt, was[0]), was[1])
        elif epoch > was[1]:
            counters[device_id] = (fcnt, epoch)
        key = (form, text)
        if key not in ctx_ids:
            ctx_ids[key] = len(ctx_ids) + 1
        out.append((device_id, fcnt, epoch, ctx_ids[key], body, alarm, received_at,
                    len(body) + ROW_OVERHEAD))
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO ctx (id, form, text) VALUES (?, ?, ?)",
                   [(i, form, text) for (form, text), i in ctx_ids.items()])
    db.executemany(
        "INSERT INTO rows (device_id, fcnt, epoch, ctx, body, alarm, received_at, size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out)
    db.executemany("INSERT INTO replay (device_id, fcnt, epoch) VALUES (?, ?, ?)",
                   [(d, f, e) for d, (f, e) in counters.items()])
    db.execute("COMMIT")
    log.error("spool %s: salvaged %d rows and %d replay counters from %s",
              moved.rsplit(".corrupt-", 1)[0], len(rows), len(counters), moved)

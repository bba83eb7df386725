"""The downlink store's tables in the registry database (gateway.downlinks): created
when missing (``IF NOT EXISTS``, ``OR IGNORE``), so opening a registry of any age
adds what it lacks and changes nothing else.

- ``dl_devices``, ``dl_commands``: the per-device counters and rotation state,
  and the command queue (gateway.downlinks).
- ``dl_rekey``, ``dl_rekey_peers``, ``dl_rekey_out``, ``dl_rekey_retired``: key
  rotations with several gateways (gateway.downlink_rekey).
- ``device_changes``: a counter the triggers move with every change of
  ``devices`` the pipeline cares about (``DownlinkStore.device_changes``).
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS dl_devices (
    device_id   INTEGER PRIMARY KEY,
    dcnt        INTEGER NOT NULL DEFAULT -1,
    cmd_seq     INTEGER NOT NULL DEFAULT 0,
    key_no      INTEGER NOT NULL DEFAULT 0,
    next_key    BLOB,
    next_key_no INTEGER,
    answered    INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS dl_commands (
    row         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL,
    cmd_id      INTEGER NOT NULL,
    ref         TEXT,
    op          TEXT NOT NULL,
    args        TEXT NOT NULL,
    state       TEXT NOT NULL,
    result      TEXT,
    detail      INTEGER,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    sends       INTEGER NOT NULL DEFAULT 0,
    dcnt        INTEGER,
    up_fcnt     INTEGER
);
CREATE INDEX IF NOT EXISTS dl_commands_open ON dl_commands (device_id, state);
CREATE UNIQUE INDEX IF NOT EXISTS dl_commands_ref ON dl_commands (device_id, ref)
    WHERE ref IS NOT NULL;
CREATE TABLE IF NOT EXISTS dl_rekey (
    device_id   INTEGER PRIMARY KEY,
    key_no      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    origin      TEXT NOT NULL,
    ready       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dl_rekey_peers (
    device_id   INTEGER NOT NULL,
    gateway     TEXT NOT NULL,
    key_no      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    answer      TEXT NOT NULL,
    PRIMARY KEY (device_id, gateway)
);
CREATE TABLE IF NOT EXISTS dl_rekey_out (
    device_id   INTEGER NOT NULL,
    gateway     TEXT NOT NULL,
    what        TEXT NOT NULL,
    key_no      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    base        TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    updated_at  REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, gateway)
);
CREATE TABLE IF NOT EXISTS dl_rekey_retired (
    device_id   INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (device_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS device_changes (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n  INTEGER NOT NULL
);
INSERT OR IGNORE INTO device_changes VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS device_changes_insert AFTER INSERT ON devices
    BEGIN UPDATE device_changes SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS device_changes_delete AFTER DELETE ON devices
    BEGIN UPDATE device_changes SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS device_changes_update
    AFTER UPDATE OF device_id, kind, key, name, site, location ON devices
    BEGIN UPDATE device_changes SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS device_changes_interval
    AFTER UPDATE OF interval_s ON devices
    BEGIN UPDATE device_changes SET n = n + 1; END;
"""


def statements(script: str) -> list[str]:
    """The statements of a schema script (a trigger's body keeps its own ';')."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf.strip())
            buf = ""
    return out

"""The durable per-device downlink store (docs/protocol.md section 12.11).

It lives in the registry database (its own ``dl_*`` tables next to
``devices``), because everything in it is shared by the gateways that serve
a device, as the registry is: the downlink counter, the command queue and the
key-rotation state. Every change is one SQLite transaction taken with
``BEGIN IMMEDIATE``, so two gateway processes on one registry serialise on
the database lock and never hand out the same counter value or command id.

What it keeps per device (table ``dl_devices``):

- ``dcnt``: the last downlink counter taken. ``take_counter`` commits the next
  value before anything is sealed; a downlink built but never sent wastes a
  value, none is ever used twice (restarts, ``kill -9``, several gateways).
- ``cmd_seq``: the last command id handed out (1..65535, wrapping past ids
  still open).
- the rotation state (section 12.9): ``key_no`` of the current key (the key
  itself stays in ``devices.key``), and while a rotation is pending the
  ``next_key`` and its number. ``commit_rekey`` moves next to current in the
  same transaction that updates ``devices.key``.
- ``answered``: the last uplink (epoch, counter) a downlink was sent after. Several
  gateways hear the same uplink; ``take_counter(device, after_fcnt)`` claims
  the uplink and the counter in one transaction, so exactly one of them
  answers it.

Each command (table ``dl_commands``) has the device's command id (what travels
in the downlink and comes back in the node's report), the caller's reference
(an MQTT command's ``id``; unique per device, so a command delivered twice is
queued once), its op and arguments as JSON, and a state:

    queued -> sent -> applied | rejected (result, detail)
       ^        |
       +--------+  no report for it in the next uplink: sent again, new counter
    queued | sent -> expired (past ``expires_at``) | cancelled (by the operator)

Bounds (``DownlinkLimits``, the ``[downlinks]`` table of the gateway
configuration): open commands per device (a full queue refuses a new one
with a clear error), the default expiry and the number of sends before a
command is given up as ``expired``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from knute.gateway.dbfile import immediate
from knute.gateway.device_fields import fingerprint
from knute.gateway.errors import KnuteError
from knute.gateway.silence import config_send_interval_s
from knute.protocol import downlink as dls

# Command ops as the CLI, MQTT and the store name them -> the wire op.
OPS: dict[str, int] = {
    "time": dls.OP_CLOCK,
    "config": dls.OP_CONFIG,
    "ack": dls.OP_ACK_ALARM,
    "rekey": dls.OP_REKEY,
    "rekey_done": dls.OP_REKEY_DONE,
    "reboot": dls.OP_REBOOT,
    "upd_begin": dls.OP_UPD_BEGIN,
    "upd_chunk": dls.OP_UPD_CHUNK,
    "upd_switch": dls.OP_UPD_SWITCH,
}

QUEUED = "queued"
SENT = "sent"
APPLIED = "applied"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATES = (QUEUED, SENT, APPLIED, REJECTED, EXPIRED, CANCELLED)
OPEN_STATES = (QUEUED, SENT)

DEFAULT_MAX_QUEUED = 32           # open commands per device
DEFAULT_EXPIRY_S = 7 * 86400.0    # a meter sending 4 times a day gets 28 chances
DEFAULT_MAX_SENDS = 8             # sends without a report before a command expires
KEEP_CLOSED_S = 30 * 86400.0      # finished commands stay this long for `devices show`

_SCHEMA = """
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


MAX_GATEWAYS = 64                 # gateways of a city that take downlink counters


def next_in_stride(last: int, index: int, count: int) -> int:
    """The smallest value above ``last`` that is ``index`` modulo ``count``."""
    value = last + 1
    return value + (index - value) % count


def next_cmd_id(last: int, index: int, count: int) -> int:
    """The command id after ``last`` (1..65535) that is this gateway's: ``(id - 1) % count
    == index``, so ids handed out by different gateways never meet at a node."""
    value = next_in_stride(last - 1, index, count) + 1
    if value > dls.MAX_CMD_ID:
        value = index + 1
    return value


class QueueFull(KnuteError):
    """The device already has the configured number of open commands."""


class CounterExhausted(KnuteError):
    """The device's downlink counter reached 16,777,215: it gets no more downlinks."""


@dataclass(frozen=True)
class DownlinkLimits:
    """Queue bounds and expiry: the ``[downlinks]`` table of the gateway configuration."""

    max_queued: int = DEFAULT_MAX_QUEUED
    expiry_s: float = DEFAULT_EXPIRY_S
    max_sends: int = DEFAULT_MAX_SENDS


@dataclass(frozen=True)
class Command:
    """One command and its progress."""

    device_id: int
    cmd_id: int
    op: str
    args: dict[str, Any]
    state: str
    created_at: float
    expires_at: float
    updated_at: float
    ref: str | None = None
    result: str | None = None
    detail: int | None = None
    sends: int = 0
    dcnt: int | None = None
    up_fcnt: int | None = None

    @property
    def open(self) -> bool:
        """Still to be sent or waiting for the node's report."""
        return self.state in OPEN_STATES

    def as_dict(self) -> dict[str, Any]:
        """The command as JSON (``knute devices show``, the MQTT status message)."""
        out: dict[str, Any] = {
            "device": f"{self.device_id:08x}", "cmd_id": self.cmd_id, "id": self.ref,
            "op": self.op, "args": _public_args(self.op, self.args), "state": self.state,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "updated_at": self.updated_at, "sends": self.sends}
        if self.result is not None:
            out["result"] = self.result
            out["detail"] = self.detail
        return out


def _public_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments fit to print: never a key, never a bundle's bytes."""
    if op == "rekey":
        out = {"key_no": args.get("key_no")}
        if "waiting_for" in args:
            out["waiting_for"] = args["waiting_for"]
        return out
    if op == "upd_chunk":
        return {k: v for k, v in args.items() if k != "data"}
    return dict(args)


@dataclass(frozen=True)
class RekeyState:
    """A device's key numbers: the current one and, during a rotation, the next key."""

    key_no: int
    next_key: bytes | None = field(default=None, repr=False)
    next_key_no: int | None = None


@dataclass(frozen=True)
class RekeyOut:
    """One message a gateway keeps on the broker for one peer about one rotation:
    ``offer`` (with the key), ``hold``/``refuse`` (an answer), ``commit`` or ``abort``."""

    device_id: int
    gateway: str
    what: str
    key_no: int
    fingerprint: str
    base: str = ""
    reason: str = ""
    key: bytes | None = field(default=None, repr=False)


@dataclass
class ReportOutcome:
    """What an uplink's report changed: commands that reached a final state or went back."""

    changed: list[Command] = field(default_factory=list)


_COLS = ("device_id, cmd_id, op, args, state, created_at, expires_at, updated_at, ref, "
         "result, detail, sends, dcnt, up_fcnt")


def _command(row: Sequence[Any]) -> Command:
    return Command(device_id=int(row[0]), cmd_id=int(row[1]), op=str(row[2]),
                   args=json.loads(row[3]), state=str(row[4]), created_at=float(row[5]),
                   expires_at=float(row[6]), updated_at=float(row[7]), ref=row[8],
                   result=row[9], detail=row[10], sends=int(row[11]), dcnt=row[12],
                   up_fcnt=row[13])


def _apply_send_interval(db: sqlite3.Connection, device_id: int, args: Any) -> None:
    """Record the send interval an applied config command set (if it set one)."""
    values = args.get("values") if isinstance(args, dict) else None
    interval = config_send_interval_s(values) if isinstance(values, dict) else None
    if interval is None:
        return
    try:
        db.execute("UPDATE devices SET interval_s = ? WHERE device_id = ?",
                   (interval, device_id))
    except sqlite3.OperationalError as exc:     # a registry file from before the column
        if "interval_s" not in str(exc):
            raise


def _tell(db: sqlite3.Connection, device_id: int, peer: str, what: str, key_no: int,
          fp: str, base: str = "", reason: str = "") -> None:
    """Set what this gateway keeps telling ``peer`` about a device's rotation."""
    db.execute("INSERT OR REPLACE INTO dl_rekey_out (device_id, gateway, what, key_no, "
               "fingerprint, base, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (device_id, peer, what, key_no, fp, base, reason, time.time()))


def _statements(script: str) -> list[str]:
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


class DownlinkStore:
    """The ``dl_*`` tables of a registry database. Thread-safe; each change one transaction.

    Open it on a registry that exists (``gateway.registry.Registry`` creates and
    migrates the file); the tables are created here when missing.
    """

    def __init__(self, path: str, limits: DownlinkLimits | None = None,
                 stride: tuple[int, int] = (0, 1), *, gateway_id: str = "",
                 peers: Sequence[str] = ()) -> None:
        self.path = path
        self.gateway_id = gateway_id
        self.peers = tuple(p for p in peers if p != gateway_id)   # rotation peers
        self.limits = limits or DownlinkLimits()
        if not 0 <= stride[0] < stride[1] <= MAX_GATEWAYS:
            raise KnuteError(f"gateway index {stride[0]} of {stride[1]}: the index is "
                             f"0..count-1 and the count 1..{MAX_GATEWAYS}")
        self.stride = stride
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0,
                                       isolation_level=None)
            self._db.execute("PRAGMA synchronous=FULL")
            self._create()
        except sqlite3.Error as exc:
            raise KnuteError(f"registry {path}: downlink tables: {exc}") from None

    def ensure_tables(self) -> bool:
        """Create the downlink tables if they are missing (a registry restored from a
        backup taken before them); True if they were."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name IN "
                                   "('dl_devices', 'dl_commands', 'device_changes', 'dl_rekey', "
                                   "'dl_rekey_peers', 'dl_rekey_out', 'dl_rekey_retired')"
                                   ).fetchone()
        if int(row[0]) < 7:
            self._create()
            return True
        return False

    def _create(self) -> None:
        with self._write() as db:
            for stmt in _statements(_SCHEMA):
                db.execute(stmt)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        return immediate(self._db, self._lock)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def device_changes(self) -> int:
        """A counter that moves with every change of the ``devices`` table that the
        pipeline cares about (not the display cache, not the ``dl_*`` tables): the daemon
        re-reads its device snapshot only when it moved."""
        with self._lock:
            return int(self._db.execute("SELECT n FROM device_changes").fetchone()[0])

    # -- per-device state ----------------------------------------------------------------

    @staticmethod
    def _ensure(db: sqlite3.Connection, device_id: int) -> None:
        db.execute("INSERT OR IGNORE INTO dl_devices (device_id) VALUES (?)", (device_id,))

    def take_counter(self, device_id: int, after_fcnt: int | None = None,
                     epoch: int = 0) -> int | None:
        """The next downlink counter of a device, committed before it is returned.

        With ``after_fcnt`` (the uplink the downlink answers, in the device's counter
        ``epoch``) the uplink is claimed in the same transaction: None when a downlink
        after it (or a later uplink) was already sent, by this gateway or another one
        sharing the registry. An operator's counter reset starts a new epoch, so the
        node's restarted counter is answered again.

        With a ``stride`` (``index`` of ``count`` gateways, each with its own registry)
        the value is the next one above every counter this store knows of (its own and
        those learned from the other gateways) with ``value % count == index``: the
        gateways' counters are disjoint by construction, whatever they learned.
        """
        claim = None if after_fcnt is None else (epoch << 24) + after_fcnt
        index, count = self.stride
        with self._write() as db:
            self._ensure(db, device_id)
            dcnt, answered = db.execute(
                "SELECT dcnt, answered FROM dl_devices WHERE device_id = ?",
                (device_id,)).fetchone()
            if claim is not None and int(answered) >= claim:
                return None
            value = next_in_stride(int(dcnt), index, count)
            if value > dls.MAX_DCNT:
                raise CounterExhausted(f"device {device_id:08x}: downlink counter exhausted")
            db.execute("UPDATE dl_devices SET dcnt = ?, answered = max(answered, ?) "
                       "WHERE device_id = ?",
                       (value, -1 if claim is None else claim, device_id))
        return value

    def learn_counter(self, device_id: int, dcnt: int) -> bool:
        """Another gateway used downlink counter ``dcnt`` for the device: the next one taken
        here is above it (the node accepts only increasing counters). True if it raised
        what this store knew."""
        if not 0 <= dcnt <= dls.MAX_DCNT:
            return False
        with self._write() as db:
            self._ensure(db, device_id)
            cur = db.execute("UPDATE dl_devices SET dcnt = ? WHERE device_id = ? AND dcnt < ?",
                             (dcnt, device_id, dcnt))
            return cur.rowcount > 0

    def counter(self, device_id: int) -> int | None:
        """The last downlink counter taken for a device, or None."""
        with self._lock:
            row = self._db.execute("SELECT dcnt FROM dl_devices WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return None if row is None or row[0] < 0 else int(row[0])

    # -- the queue -----------------------------------------------------------------------

    def queue(self, device_id: int, op: str, args: dict[str, Any] | None = None, *,
              ref: str | None = None, expiry_s: float | None = None,
              now: float | None = None) -> tuple[Command, bool]:
        """Queue one command; (the command, True if new). A repeated ``ref`` is not queued
        again: the command already stored under it is returned with False.

        QueueFull when the device has ``max_queued`` open commands.
        """
        if op not in OPS:
            raise KnuteError(f"unknown command {op!r} (known: {', '.join(OPS)})")
        now = time.time() if now is None else now
        expiry = self.limits.expiry_s if expiry_s is None else expiry_s
        text = json.dumps(args or {}, sort_keys=True)
        with self._write() as db:
            return self._insert(db, device_id, op, text, ref, now, now + expiry)

    def _insert(self, db: sqlite3.Connection, device_id: int, op: str, text: str,
                ref: str | None, now: float, expires_at: float) -> tuple[Command, bool]:
        """``queue`` inside a transaction the caller holds."""
        if ref is not None:
            row = db.execute(f"SELECT {_COLS} FROM dl_commands WHERE device_id = ? "
                             "AND ref = ?", (device_id, ref)).fetchone()
            if row is not None:
                return _command(row), False
        open_ids = {int(r[0]) for r in db.execute(
            "SELECT cmd_id FROM dl_commands WHERE device_id = ? AND state IN (?, ?)",
            (device_id, *OPEN_STATES))}
        if len(open_ids) >= self.limits.max_queued:
            raise QueueFull(f"device {device_id:08x} has {len(open_ids)} commands "
                            f"waiting (downlinks.max_queued = {self.limits.max_queued})")
        self._ensure(db, device_id)
        seq = int(db.execute("SELECT cmd_seq FROM dl_devices WHERE device_id = ?",
                             (device_id,)).fetchone()[0])
        cmd_id = seq
        while True:
            cmd_id = next_cmd_id(cmd_id, *self.stride)          # 1..65535
            if cmd_id not in open_ids:
                break
        db.execute("UPDATE dl_devices SET cmd_seq = ? WHERE device_id = ?",
                   (cmd_id, device_id))
        db.execute("INSERT INTO dl_commands (device_id, cmd_id, ref, op, args, state, "
                   "created_at, expires_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (device_id, cmd_id, ref, op, text, QUEUED, now, expires_at, now))
        row = db.execute(f"SELECT {_COLS} FROM dl_commands WHERE row = last_insert_rowid()"
                         ).fetchone()
        return _command(row), True

    def queue_update(self, device_id: int, bundle: bytes, chunk: int, *,
                     ref: str | None = None, now: float | None = None) -> list[Command]:
        """Queue a module update: ``upd_begin``, the bundle in ``chunk``-byte pieces and
        ``upd_switch``, in one transaction (all or none). Its commands count against no
        ``max_queued``: a bundle is at most 65,535 bytes, so they are bounded anyway."""
        if not bundle or len(bundle) > dls.MAX_BUNDLE:
            raise KnuteError(f"a module bundle is 1..{dls.MAX_BUNDLE} bytes")
        if not 1 <= chunk <= 192:
            raise KnuteError("chunk must be 1..192 bytes")
        now = time.time() if now is None else now
        with self._write() as db:
            if any(r[0] for r in db.execute(
                    "SELECT 1 FROM dl_commands WHERE device_id = ? AND state IN (?, ?) AND "
                    "op LIKE 'upd_%' LIMIT 1", (device_id, *OPEN_STATES))):
                raise KnuteError(f"device {device_id:08x}: an update is already on its way")
            last = db.execute("SELECT args FROM dl_commands WHERE device_id = ? AND "
                              "op = 'upd_begin' ORDER BY row DESC LIMIT 1",
                              (device_id,)).fetchone()
            number = (json.loads(last[0])["update"] % 0xFFFF + 1) if last else 1
            steps: list[tuple[str, dict[str, Any]]] = [
                ("upd_begin", {"update": number, "size": len(bundle)})]
            for offset in range(0, len(bundle), chunk):
                steps.append(("upd_chunk", {"update": number, "offset": offset,
                                            "data": bundle[offset:offset + chunk].hex()}))
            steps.append(("upd_switch", {"update": number}))
            self._ensure(db, device_id)
            open_ids = {int(r[0]) for r in db.execute(
                "SELECT cmd_id FROM dl_commands WHERE device_id = ? AND state IN (?, ?)",
                (device_id, *OPEN_STATES))}
            cmd_id = int(db.execute("SELECT cmd_seq FROM dl_devices WHERE device_id = ?",
                                    (device_id,)).fetchone()[0])
            first = None
            for pos, (op, args) in enumerate(steps):
                while True:
                    cmd_id = next_cmd_id(cmd_id, *self.stride)
                    if cmd_id not in open_ids:
                        break
                open_ids.add(cmd_id)
                db.execute("INSERT INTO dl_commands (device_id, cmd_id, ref, op, args, state, "
                           "created_at, expires_at, updated_at) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (device_id, cmd_id, ref if pos == 0 else None, op,
                            json.dumps(args, sort_keys=True), QUEUED, now,
                            now + self.limits.expiry_s, now))
                if first is None:
                    first = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            db.execute("UPDATE dl_devices SET cmd_seq = ? WHERE device_id = ?",
                       (cmd_id, device_id))
            rows = db.execute(f"SELECT {_COLS} FROM dl_commands WHERE row >= ? AND "
                              "device_id = ? ORDER BY row", (first, device_id)).fetchall()
        return [_command(r) for r in rows]

    def commands(self, device_id: int, *, open_only: bool = False,
                 limit: int = 100) -> list[Command]:
        """A device's commands, oldest first (the open ones, or the latest ``limit``)."""
        where = "device_id = ?"
        params: list[Any] = [device_id]
        if open_only:
            where += " AND state IN (?, ?)"
            params += list(OPEN_STATES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM (SELECT * FROM dl_commands WHERE {where} "
                "ORDER BY row DESC LIMIT ?) ORDER BY row", (*params, limit)).fetchall()
        return [_command(r) for r in rows]

    def get(self, device_id: int, cmd_id: int) -> Command | None:
        """The latest command with this id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLS} FROM dl_commands WHERE device_id = ? AND cmd_id = ? "
                "ORDER BY row DESC LIMIT 1", (device_id, cmd_id)).fetchone()
        return None if row is None else _command(row)

    def cancel(self, device_id: int, cmd_id: int, now: float | None = None) -> Command:
        """Stop sending an open command (a node that applied it still reports it)."""
        now = time.time() if now is None else now
        with self._write() as db:
            rekey = db.execute("SELECT 1 FROM dl_commands WHERE device_id = ? AND cmd_id = ? "
                               "AND op = 'rekey' AND sends = 0 AND state IN (?, ?)",
                               (device_id, cmd_id, *OPEN_STATES)).fetchone()
            if rekey is not None:       # never sent: the rotation ends everywhere
                ended = self._abort(db, device_id, CANCELLED, None, now)
                rekey = None if ended is None else rekey
            cur = db.execute("UPDATE dl_commands SET state = ?, updated_at = ? WHERE "
                             "device_id = ? AND cmd_id = ? AND state IN (?, ?)",
                             (CANCELLED, now, device_id, cmd_id, *OPEN_STATES))
            if cur.rowcount == 0 and rekey is None:
                raise KnuteError(f"device {device_id:08x} has no open command {cmd_id}")
        cmd = self.get(device_id, cmd_id)
        assert cmd is not None
        return cmd

    def expire(self, now: float | None = None) -> list[Command]:
        """Move open commands past their expiry (or their sends) to ``expired``; forget
        finished commands older than ``KEEP_CLOSED_S`` (the table stays bounded)."""
        now = time.time() if now is None else now
        aborted: list[Command] = []
        with self._write() as db:
            db.execute("DELETE FROM dl_commands WHERE state NOT IN (?, ?) AND updated_at < ?",
                       (*OPEN_STATES, now - KEEP_CLOSED_S))
            # A rotation's last word to a peer is kept as long (it stays retained on the
            # broker; a restart then does not publish the city's whole history again).
            db.execute("DELETE FROM dl_rekey_out WHERE what != 'offer' AND updated_at < ?",
                       (now - KEEP_CLOSED_S,))
            # A rotation whose rekey was never sent (peers that did not all confirm, a
            # node not heard) ends: its next key is dropped here and at the peers.
            for (device_id, waiting) in db.execute(
                    "SELECT c.device_id, EXISTS (SELECT 1 FROM dl_rekey_peers p WHERE "
                    "p.device_id = c.device_id AND p.answer != 'held') FROM dl_commands c "
                    "WHERE c.op = 'rekey' AND c.sends = 0 AND c.state IN (?, ?) AND "
                    "c.expires_at <= ?", (*OPEN_STATES, now)).fetchall():
                cmd = self._abort(db, int(device_id), EXPIRED,
                                  "peer_missing" if waiting else None, now)
                if cmd is not None:
                    aborted.append(cmd)
            rows = db.execute(
                f"SELECT row, {_COLS} FROM dl_commands WHERE state IN (?, ?) AND "
                "(expires_at <= ? OR (state = ? AND sends >= ?))",
                (*OPEN_STATES, now, QUEUED, self.limits.max_sends)).fetchall()
            db.executemany("UPDATE dl_commands SET state = ?, updated_at = ? WHERE row = ?",
                           [(EXPIRED, now, r[0]) for r in rows])
        return aborted + [_command((*r[1:5], EXPIRED, *r[6:8], now, *r[9:])) for r in rows]

    def due(self, device_id: int, now: float | None = None) -> list[Command]:
        """Queued commands of a device, oldest first, not yet expired. A ``rekey`` whose
        peers have not all confirmed holding its key is not due yet."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM dl_commands WHERE device_id = ? AND state = ? AND "
                "expires_at > ? AND NOT (op = 'rekey' AND EXISTS (SELECT 1 FROM dl_rekey r "
                "WHERE r.device_id = dl_commands.device_id AND r.ready = 0)) ORDER BY row",
                (device_id, QUEUED, now)).fetchall()
        return [_command(r) for r in rows]

    def mark_sent(self, device_id: int, cmd_ids: Sequence[int], dcnt: int, up_fcnt: int,
                  now: float | None = None) -> list[Command]:
        """Record that these queued commands left in downlink ``dcnt`` after uplink
        ``up_fcnt``; their report is due in a later uplink."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.executemany(
                "UPDATE dl_commands SET state = ?, sends = sends + 1, dcnt = ?, up_fcnt = ?, "
                "updated_at = ? WHERE device_id = ? AND cmd_id = ? AND state IN (?, ?)",
                [(SENT, dcnt, up_fcnt, now, device_id, c, *OPEN_STATES) for c in cmd_ids])
        out = [self.get(device_id, c) for c in cmd_ids]
        return [c for c in out if c is not None]

    def adopt(self, device_id: int, sent: Sequence[dict[str, Any]], dcnt: int, up_fcnt: int,
              now: float | None = None) -> int:
        """Record commands another gateway sent in downlink ``dcnt`` after uplink ``up_fcnt``
        (``gateway.downlink_city``'s notice: ``ref``, ``cmd_id``, ``op``, ``args``,
        ``expires_at`` each), so this gateway does not send them too and reads the node's
        report of them under the sender's command id. An open command with the same ref
        becomes ``sent``; one this store never had is added as ``sent``; a closed one is
        left alone, as is one whose id is taken here by another open command. Nothing is
        published for it here. Returns how many commands changed."""
        now = time.time() if now is None else now
        changed = 0
        with self._write() as db:
            for cmd in sent:
                ref, cmd_id = str(cmd["ref"]), int(cmd["cmd_id"])
                if str(cmd["op"]) not in OPS or not 1 <= cmd_id <= dls.MAX_CMD_ID:
                    continue
                row = db.execute("SELECT row, state FROM dl_commands WHERE device_id = ? "
                                 "AND ref = ?", (device_id, ref)).fetchone()
                if row is not None and row[1] not in OPEN_STATES:
                    continue
                mine = -1 if row is None else int(row[0])
                if db.execute("SELECT 1 FROM dl_commands WHERE device_id = ? AND cmd_id = ? "
                              "AND state IN (?, ?) AND row != ?",
                              (device_id, cmd_id, *OPEN_STATES, mine)).fetchone():
                    continue
                if row is None:
                    db.execute(
                        "INSERT INTO dl_commands (device_id, cmd_id, ref, op, args, state, "
                        "created_at, expires_at, updated_at, sends, dcnt, up_fcnt) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                        (device_id, cmd_id, ref, str(cmd["op"]),
                         json.dumps(cmd.get("args") or {}, sort_keys=True), SENT, now,
                         float(cmd.get("expires_at") or now + self.limits.expiry_s), now,
                         dcnt, up_fcnt))
                else:
                    db.execute("UPDATE dl_commands SET state = ?, cmd_id = ?, "
                               "sends = sends + 1, dcnt = ?, up_fcnt = ?, updated_at = ? "
                               "WHERE row = ?", (SENT, cmd_id, dcnt, up_fcnt, now, mine))
                changed += 1
        return changed

    def close_reported(self, device_id: int, outcomes: Sequence[dict[str, Any]],
                       now: float | None = None) -> int:
        """Close commands another gateway read the node's report of (``ref``, ``state``
        ``applied`` or ``rejected``, ``result``, ``detail`` each): open ones with that ref
        take the state, without a word. A gateway that was away and gets the others'
        notices late learns so that what it holds was done, and never sends it again."""
        now = time.time() if now is None else now
        changed = 0
        with self._write() as db:
            for out in outcomes:
                state = out.get("state")
                if state not in (APPLIED, REJECTED):
                    continue
                result = None if state == APPLIED else out.get("result")
                detail = None if state == APPLIED else out.get("detail")
                cur = db.execute(
                    "UPDATE dl_commands SET state = ?, result = ?, detail = ?, updated_at = ? "
                    "WHERE device_id = ? AND ref = ? AND state IN (?, ?)",
                    (state, None if result is None else str(result),
                     detail if isinstance(detail, int) else None, now, device_id,
                     str(out["ref"]), *OPEN_STATES))
                changed += cur.rowcount
        return changed

    def unsend(self, device_id: int, cmd_ids: Sequence[int], now: float | None = None
               ) -> list[Command]:
        """Put sent commands back in the queue (the transmitter refused the downlink)."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.executemany("UPDATE dl_commands SET state = ?, updated_at = ? WHERE "
                           "device_id = ? AND cmd_id = ? AND state = ?",
                           [(QUEUED, now, device_id, c, SENT) for c in cmd_ids])
        out = [self.get(device_id, c) for c in cmd_ids]
        return [c for c in out if c is not None]

    def device_key(self, device_id: int) -> bytes | None:
        """The device's current key as committed in the registry (fresh after a rotation)."""
        with self._lock:
            row = self._db.execute("SELECT key FROM devices WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def report(self, device_id: int, fcnt: int, entries: Sequence[tuple[int, str, int]],
               now: float | None = None) -> ReportOutcome:
        """Apply an uplink's report (``protocol.downlink_send.parse_report``'s entries).

        A reported command that is open becomes ``applied`` or ``rejected`` (with
        the result and detail). A command sent after an earlier uplink and not in
        this report is queued again: the downlink or its report was lost, and it
        goes out again under a new counter. An applied ``config`` that sets the
        node's send interval (``water.sends_per_day``, ``air.interval_s``) sets the
        device's ``interval_s`` in the registry in the same transaction (the
        silent-node alarm, gateway.silence).
        """
        now = time.time() if now is None else now
        out = ReportOutcome()
        with self._write() as db:
            rows = {int(r[2]): r for r in db.execute(
                f"SELECT row, {_COLS} FROM dl_commands WHERE device_id = ? AND state IN (?, ?)",
                (device_id, *OPEN_STATES))}
            reported: set[int] = set()
            for cmd_id, result, detail in entries:
                row = rows.get(cmd_id)
                if row is None:
                    continue          # cancelled or expired since, or an old id
                state = APPLIED if result == "applied" else REJECTED
                res = None if state == APPLIED else result
                if cmd_id in reported:          # a config with two refused values
                    continue
                reported.add(cmd_id)
                db.execute("UPDATE dl_commands SET state = ?, result = ?, detail = ?, "
                           "updated_at = ? WHERE row = ?",
                           (state, res, None if state == APPLIED else detail, now, row[0]))
                if state == APPLIED and row[3] == "config":
                    _apply_send_interval(db, device_id, json.loads(row[4]))
                out.changed.append(_command((*row[1:5], state, *row[6:8], now, row[9], res,
                                             None if state == APPLIED else detail,
                                             *row[12:])))
            for cmd_id, row in rows.items():
                if cmd_id in reported or row[5] != SENT:
                    continue
                # Any uplink but the one the downlink answered could carry its report
                # (uplinks arrive in counter order; after a counter reset, lower ones).
                sent_after = row[14]
                if sent_after is not None and int(sent_after) != fcnt:
                    db.execute("UPDATE dl_commands SET state = ?, updated_at = ? "
                               "WHERE row = ?", (QUEUED, now, row[0]))
                    out.changed.append(_command((*row[1:5], QUEUED, *row[6:8], now,
                                                 *row[9:])))
        return out

    # -- key rotation (section 12.9) ---------------------------------------------------

    def rekey_state(self, device_id: int) -> RekeyState:
        """The device's key numbers and pending next key."""
        with self._lock:
            row = self._db.execute(
                "SELECT key_no, next_key, next_key_no FROM dl_devices WHERE device_id = ?",
                (device_id,)).fetchone()
        if row is None:
            return RekeyState(0)
        return RekeyState(int(row[0]), None if row[1] is None else bytes(row[1]), row[2])

    def next_keys(self) -> dict[int, bytes]:
        """device id -> next key, for every device with a rotation pending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, next_key FROM dl_devices WHERE next_key IS NOT NULL"
            ).fetchall()
        return {int(r[0]): bytes(r[1]) for r in rows}

    def begin_rekey(self, device_id: int, new_key: bytes, *, ref: str | None = None,
                    now: float | None = None, expiry_s: float | None = None) -> Command:
        """Step 1 and 2 of a rotation: store ``new_key`` as next, then queue ``rekey``.

        Both in one transaction, so the key is stored before anything can send it.
        A second rotation while one is pending is refused. With several gateways
        (``peers``) the next key is also offered to each peer (``rekey_outbox``) and the
        ``rekey`` command is not due before every peer said it holds the key
        (``rekey_answer``); its arguments then keep only the key number (the key is
        taken from the next key when the downlink is sealed, and never travels in a
        notice to the other gateways).
        """
        if len(new_key) != 16:
            raise KnuteError("a key is 16 bytes")
        if self.stride[1] > 1 and not self.peers:
            raise KnuteError(f"device {device_id:08x}: key rotation with several gateways "
                             "([downlinks] gateways > 1) needs the other gateways' share keys "
                             "in [share] peers (docs/operations.md, \"Several gateways: key "
                             "rotation\")")
        now = time.time() if now is None else now
        with self._write() as db:
            self._ensure(db, device_id)
            key_no, pending = db.execute(
                "SELECT key_no, next_key FROM dl_devices WHERE device_id = ?",
                (device_id,)).fetchone()
            if pending is not None:
                raise KnuteError(f"device {device_id:08x}: a key rotation is already pending")
            current = db.execute("SELECT key FROM devices WHERE device_id = ?",
                                 (device_id,)).fetchone()
            if current is None:
                raise KnuteError(f"device {device_id:08x} is not registered")
            nxt = (int(key_no) + 1) % 256
            db.execute("UPDATE dl_devices SET next_key = ?, next_key_no = ? WHERE "
                       "device_id = ?", (bytes(new_key), nxt, device_id))
            args: dict[str, Any] = {"key_no": nxt, "key": new_key.hex()}
            if self.peers:
                fp, base = fingerprint(new_key), fingerprint(bytes(current[0]))
                db.execute("INSERT OR REPLACE INTO dl_rekey VALUES (?, ?, ?, ?, 0)",
                           (device_id, nxt, fp, self.gateway_id))
                db.execute("DELETE FROM dl_rekey_peers WHERE device_id = ?", (device_id,))
                for peer in self.peers:
                    db.execute("INSERT INTO dl_rekey_peers VALUES (?, ?, ?, ?, 'waiting')",
                               (device_id, peer, nxt, fp))
                    _tell(db, device_id, peer, "offer", nxt, fp, base)
                args = {"key_no": nxt}
            cmd, _ = self._insert(db, device_id, "rekey", json.dumps(args, sort_keys=True),
                                  ref, now,
                                  now + (self.limits.expiry_s if expiry_s is None else expiry_s))
        return cmd

    def rekey_key(self, device_id: int, key_no: int) -> bytes | None:
        """The pending next key with number ``key_no`` (what a ``rekey`` carries), or None."""
        state = self.rekey_state(device_id)
        return state.next_key if state.next_key_no == key_no else None

    def _commit(self, db: sqlite3.Connection, device_id: int, now: float) -> int | None:
        """Next key -> current (``devices.key``), the old one dropped, open ``rekey``
        commands applied: the new key number, or None when no rotation was pending."""
        row = db.execute("SELECT next_key, next_key_no FROM dl_devices WHERE "
                         "device_id = ?", (device_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        old = db.execute("SELECT key FROM devices WHERE device_id = ?",
                         (device_id,)).fetchone()
        if old is not None:         # a share message with it later must not bring it back
            db.execute("INSERT OR IGNORE INTO dl_rekey_retired VALUES (?, ?)",
                       (device_id, fingerprint(bytes(old[0]))))
        db.execute("UPDATE devices SET key = ? WHERE device_id = ?",
                   (bytes(row[0]), device_id))
        db.execute("UPDATE dl_devices SET key_no = ?, next_key = NULL, next_key_no = NULL "
                   "WHERE device_id = ?", (int(row[1]), device_id))
        db.execute("DELETE FROM dl_rekey WHERE device_id = ?", (device_id,))
        db.execute("DELETE FROM dl_rekey_peers WHERE device_id = ?", (device_id,))
        db.execute("UPDATE dl_commands SET state = ?, updated_at = ? WHERE device_id = ? "
                   "AND op = 'rekey' AND state IN (?, ?)",
                   (APPLIED, now, device_id, *OPEN_STATES))
        return int(row[1])

    def commit_rekey(self, device_id: int, now: float | None = None) -> Command | None:
        """Step 3: an uplink verified under the next key. The next key becomes the
        device's key (``devices.key``) and the old one is dropped, in one transaction;
        then ``rekey_done`` is queued. None when no rotation was pending. With peers,
        the same transaction tells each of them (``rekey_outbox``: ``commit``), and
        ``rekey_done`` has a reference made of the key's fingerprint, so the gateways
        that commit from the same uplink send it once between them."""
        now_s = time.time() if now is None else now
        with self._write() as db:
            nxt = db.execute("SELECT next_key FROM dl_devices WHERE device_id = ?",
                             (device_id,)).fetchone()
            key_no = self._commit(db, device_id, now_s)
            if key_no is None:
                return None
            ref = None
            if self.peers:
                fp = fingerprint(bytes(nxt[0]))
                ref = f"rekey_done-{fp}"
                for peer in self.peers:
                    _tell(db, device_id, peer, "commit", key_no, fp)
            cmd, _ = self._insert(db, device_id, "rekey_done",
                                  json.dumps({"key_no": key_no}), ref, now_s,
                                  now_s + self.limits.expiry_s)
        return cmd

    # -- key rotation with several gateways (docs/operations.md) -------------------------

    def _abort(self, db: sqlite3.Connection, device_id: int, state: str,
               result: str | None, now: float) -> Command | None:
        """A rotation whose ``rekey`` was never sent ends here: the next key is dropped
        (the node never had it), each peer is told to drop it (``abort``), and the open
        ``rekey`` command takes ``state``. Its arguments name the peers that had not
        confirmed (``waiting_for``). None (nothing changed) if it was ever sent."""
        cmd_row = db.execute(f"SELECT row, {_COLS} FROM dl_commands WHERE device_id = ? AND "
                             "op = 'rekey' AND state IN (?, ?) ORDER BY row DESC LIMIT 1",
                             (device_id, *OPEN_STATES)).fetchone()
        if cmd_row is not None and int(cmd_row[12]) > 0:
            return None                      # sent: the node may hold the key; keep it
        rot = db.execute("SELECT key_no, fingerprint FROM dl_rekey WHERE device_id = ?",
                         (device_id,)).fetchone()
        waiting = [str(r[0]) for r in db.execute(
            "SELECT gateway FROM dl_rekey_peers WHERE device_id = ? AND answer != 'held' "
            "ORDER BY gateway", (device_id,))]
        db.execute("UPDATE dl_devices SET next_key = NULL, next_key_no = NULL "
                   "WHERE device_id = ?", (device_id,))
        if rot is not None:
            for (peer,) in db.execute("SELECT gateway FROM dl_rekey_peers WHERE device_id = ?",
                                      (device_id,)).fetchall():
                _tell(db, device_id, peer, "abort", int(rot[0]), str(rot[1]))
        db.execute("DELETE FROM dl_rekey WHERE device_id = ?", (device_id,))
        db.execute("DELETE FROM dl_rekey_peers WHERE device_id = ?", (device_id,))
        if cmd_row is None:
            return None
        args = json.loads(cmd_row[4])
        if waiting:
            args["waiting_for"] = waiting
        text = json.dumps(args, sort_keys=True)
        db.execute("UPDATE dl_commands SET state = ?, result = ?, args = ?, updated_at = ? "
                   "WHERE row = ?", (state, result, text, now, cmd_row[0]))
        return _command((*cmd_row[1:4], text, state, *cmd_row[6:8], now, cmd_row[9], result,
                         None, *cmd_row[12:]))

    def rekey_answer(self, device_id: int, gateway: str, what: str, key_no: int,
                     fp: str, reason: str = "", now: float | None = None
                     ) -> tuple[str, Command | None]:
        """At the gateway that started a rotation: a peer's answer to its offer.

        ``hold``: the peer holds the next key; when every peer does, the ``rekey``
        becomes due (``("ready", None)``). ``refuse`` (it holds another key, or a
        rotation of its own): the rotation is dropped everywhere, its command
        ``rejected`` with ``peer_refused`` (``("refused", command)``). Anything about
        another rotation, or after the command was sent, changes nothing (``("", None)``).
        """
        now = time.time() if now is None else now
        with self._write() as db:
            rot = db.execute("SELECT key_no, fingerprint, origin, ready FROM dl_rekey "
                             "WHERE device_id = ?", (device_id,)).fetchone()
            if (rot is None or (int(rot[0]), str(rot[1])) != (key_no, fp)
                    or rot[2] != self.gateway_id):
                return "", None
            mine = db.execute("SELECT answer FROM dl_rekey_peers WHERE device_id = ? AND "
                              "gateway = ?", (device_id, gateway)).fetchone()
            if mine is None:
                return "", None
            if what == "hold":
                db.execute("UPDATE dl_rekey_peers SET answer = 'held' WHERE device_id = ? "
                           "AND gateway = ?", (device_id, gateway))
                left = db.execute("SELECT count(*) FROM dl_rekey_peers WHERE device_id = ? "
                                  "AND answer != 'held'", (device_id,)).fetchone()[0]
                if int(left) == 0 and not rot[3]:
                    db.execute("UPDATE dl_rekey SET ready = 1 WHERE device_id = ?",
                               (device_id,))
                    return "ready", None
                return "", None
            if what == "refuse" and not rot[3]:
                db.execute("UPDATE dl_rekey_peers SET answer = ? WHERE device_id = ? AND "
                           "gateway = ?", (f"refused:{reason}", device_id, gateway))
                return "refused", self._abort(db, device_id, REJECTED, "peer_refused", now)
        return "", None

    def rekey_offer(self, device_id: int, origin: str, key_no: int, key: bytes,
                    base: str) -> tuple[str, str]:
        """At a peer: another gateway's offer of a device's next key (``base``: the
        fingerprint of the current key it rotates from). The key becomes this gateway's
        next key (uplinks under it are accepted from now on) and the answer is
        ``("hold", "")``; or ``("refuse", reason)``: ``unknown_device``, ``other_key``
        (this gateway holds another current key), ``busy`` (another next key is pending
        here). A repeat, or an offer of a key committed here since, is held again. The
        answer is recorded for ``rekey_outbox`` in the same transaction."""
        fp = fingerprint(key)
        with self._write() as db:
            current = db.execute("SELECT key FROM devices WHERE device_id = ?",
                                 (device_id,)).fetchone()
            answer, reason = "hold", ""
            if current is None:
                answer, reason = "refuse", "unknown_device"
            else:
                self._ensure(db, device_id)
                nxt = db.execute("SELECT next_key FROM dl_devices WHERE device_id = ?",
                                 (device_id,)).fetchone()[0]
                cur_fp = fingerprint(bytes(current[0]))
                if cur_fp == fp or (nxt is not None and bytes(nxt) == key):
                    pass
                elif nxt is not None:
                    answer, reason = "refuse", "busy"
                elif cur_fp != base:
                    answer, reason = "refuse", "other_key"
                else:
                    db.execute("UPDATE dl_devices SET next_key = ?, next_key_no = ? "
                               "WHERE device_id = ?", (bytes(key), key_no, device_id))
                    db.execute("INSERT OR REPLACE INTO dl_rekey VALUES (?, ?, ?, ?, 1)",
                               (device_id, key_no, fp, origin))
            _tell(db, device_id, origin, answer, key_no, fp, base, reason)
        return answer, reason

    def rekey_abort(self, device_id: int, origin: str, fp: str) -> bool:
        """At a peer: the gateway that offered next key ``fp`` dropped its rotation
        before sending it; this gateway drops the key too. True if it held it."""
        with self._write() as db:
            rot = db.execute("SELECT origin, fingerprint FROM dl_rekey WHERE device_id = ?",
                             (device_id,)).fetchone()
            if rot is None or (str(rot[0]), str(rot[1])) != (origin, fp):
                return False
            db.execute("UPDATE dl_devices SET next_key = NULL, next_key_no = NULL "
                       "WHERE device_id = ?", (device_id,))
            db.execute("DELETE FROM dl_rekey WHERE device_id = ?", (device_id,))
        return True

    def rekey_commit_notice(self, device_id: int, fp: str, now: float | None = None
                            ) -> list[Command]:
        """A peer heard the node under next key ``fp`` and committed it: so does this
        gateway, if ``fp`` is its next key. When this gateway started the rotation its
        open ``rekey`` commands are returned, now ``applied`` (the origin publishes that
        step; a peer's copies close silently). No ``rekey_done`` is queued here: the
        committing gateway's is the one."""
        now = time.time() if now is None else now
        with self._write() as db:
            nxt = db.execute("SELECT next_key FROM dl_devices WHERE device_id = ?",
                             (device_id,)).fetchone()
            if nxt is None or nxt[0] is None or fingerprint(bytes(nxt[0])) != fp:
                return []
            origin = db.execute("SELECT origin FROM dl_rekey WHERE device_id = ?",
                                (device_id,)).fetchone()
            mine = origin is None or origin[0] in ("", self.gateway_id)
            open_rekeys = [int(r[0]) for r in db.execute(
                "SELECT cmd_id FROM dl_commands WHERE device_id = ? AND op = 'rekey' AND "
                "state IN (?, ?)", (device_id, *OPEN_STATES))]
            self._commit(db, device_id, now)
        if not mine:
            return []
        return [c for c in (self.get(device_id, i) for i in open_rekeys) if c is not None]

    def rekey_origin(self, device_id: int) -> str | None:
        """The gateway that started the device's pending rotation ('' for one started
        without peers), or None when there is no rotation with peers pending."""
        with self._lock:
            row = self._db.execute("SELECT origin FROM dl_rekey WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return None if row is None else str(row[0])

    def rekey_outbox(self) -> list[RekeyOut]:
        """What this gateway keeps telling each peer about each device's rotation (the
        retained messages of ``gateway.rekey_city``); an offer carries the next key."""
        with self._lock:
            rows = self._db.execute(
                "SELECT o.device_id, o.gateway, o.what, o.key_no, o.fingerprint, o.base, "
                "o.reason, d.next_key FROM dl_rekey_out o LEFT JOIN dl_devices d "
                "ON d.device_id = o.device_id ORDER BY o.device_id, o.gateway").fetchall()
        out = []
        for r in rows:
            key = None
            if r[2] == "offer":
                if r[7] is None or fingerprint(bytes(r[7])) != r[4]:
                    continue                     # superseded (committed, dropped)
                key = bytes(r[7])
            out.append(RekeyOut(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]),
                                str(r[5]), str(r[6]), key))
        return out

    def rekey_peers(self, device_id: int) -> dict[str, str]:
        """At the gateway that started a rotation: each peer's answer so far (``waiting``,
        ``held``, ``refused:<reason>``)."""
        with self._lock:
            rows = self._db.execute("SELECT gateway, answer FROM dl_rekey_peers WHERE "
                                    "device_id = ? ORDER BY gateway", (device_id,)).fetchall()
        return {str(g): str(a) for g, a in rows}

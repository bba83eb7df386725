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

Beside this module: the command record, its ops and states in
gateway.downlink_commands; the tables in gateway.downlink_schema; the key
rotation's methods (``begin_rekey``, ``commit_rekey``, the peers' offers and
answers) in gateway.downlink_rekey, whose ``DownlinkRekey`` the store inherits.
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
from knute.gateway.downlink_commands import (
    APPLIED,
    CANCELLED,
    COLUMNS,
    EXPIRED,
    OPEN_STATES,
    OPS,
    QUEUED,
    REJECTED,
    SENT,
    Command,
    command_of_row,
)
from knute.gateway.downlink_rekey import DownlinkRekey
from knute.gateway.downlink_schema import SCHEMA, statements
from knute.gateway.errors import KnuteError
from knute.gateway.silence import config_send_interval_s
from knute.protocol import downlink as dls

DEFAULT_MAX_QUEUED = 32           # open commands per device
DEFAULT_EXPIRY_S = 7 * 86400.0    # a meter sending 4 times a day gets 28 chances
DEFAULT_MAX_SENDS = 8             # sends without a report before a command expires
KEEP_CLOSED_S = 30 * 86400.0      # finished commands stay this long for `devices show`


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


@dataclass
class ReportOutcome:
    """What an uplink's report changed: commands that reached a final state or went back."""

    changed: list[Command] = field(default_factory=list)


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


class DownlinkStore(DownlinkRekey):
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
            for stmt in statements(SCHEMA):
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
            row = db.execute(f"SELECT {COLUMNS} FROM dl_commands WHERE device_id = ? "
                             "AND ref = ?", (device_id, ref)).fetchone()
            if row is not None:
                return command_of_row(row), False
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
        row = db.execute(f"SELECT {COLUMNS} FROM dl_commands WHERE row = last_insert_rowid()"
                         ).fetchone()
        return command_of_row(row), True

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
            rows = db.execute(f"SELECT {COLUMNS} FROM dl_commands WHERE row >= ? AND "
                              "device_id = ? ORDER BY row", (first, device_id)).fetchall()
        return [command_of_row(r) for r in rows]

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
                f"SELECT {COLUMNS} FROM (SELECT * FROM dl_commands WHERE {where} "
                "ORDER BY row DESC LIMIT ?) ORDER BY row", (*params, limit)).fetchall()
        return [command_of_row(r) for r in rows]

    def get(self, device_id: int, cmd_id: int) -> Command | None:
        """The latest command with this id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM dl_commands WHERE device_id = ? AND cmd_id = ? "
                "ORDER BY row DESC LIMIT 1", (device_id, cmd_id)).fetchone()
        return None if row is None else command_of_row(row)

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
                f"SELECT row, {COLUMNS} FROM dl_commands WHERE state IN (?, ?) AND "
                "(expires_at <= ? OR (state = ? AND sends >= ?))",
                (*OPEN_STATES, now, QUEUED, self.limits.max_sends)).fetchall()
            db.executemany("UPDATE dl_commands SET state = ?, updated_at = ? WHERE row = ?",
                           [(EXPIRED, now, r[0]) for r in rows])
        return aborted + [command_of_row((*r[1:5], EXPIRED, *r[6:8], now, *r[9:])) for r in rows]

    def due(self, device_id: int, now: float | None = None) -> list[Command]:
        """Queued commands of a device, oldest first, not yet expired. A ``rekey`` whose
        peers have not all confirmed holding its key is not due yet."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM dl_commands WHERE device_id = ? AND state = ? AND "
                "expires_at > ? AND NOT (op = 'rekey' AND EXISTS (SELECT 1 FROM dl_rekey r "
                "WHERE r.device_id = dl_commands.device_id AND r.ready = 0)) ORDER BY row",
                (device_id, QUEUED, now)).fetchall()
        return [command_of_row(r) for r in rows]

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
                f"SELECT row, {COLUMNS} FROM dl_commands WHERE device_id = ? AND state IN (?, ?)",
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
                out.changed.append(command_of_row((*row[1:5], state, *row[6:8], now, row[9], res,
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
                    out.changed.append(command_of_row((*row[1:5], QUEUED, *row[6:8], now,
                                                 *row[9:])))
        return out

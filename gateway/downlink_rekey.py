"""Key rotation in the downlink store (docs/protocol.md section 12.9; with several
gateways, docs/operations.md "Several gateways: key rotation").

``DownlinkRekey`` is the rotation half of ``gateway.downlinks.DownlinkStore``,
which inherits it: the next key and its number in ``dl_devices``, and with
peers the ``dl_rekey*`` tables (the rotation, each peer's answer, what this
gateway keeps telling each peer, the keys retired). Every method works in the
store's transactions (``_write``) on the store's connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from knute.gateway.device_fields import fingerprint
from knute.gateway.downlink_commands import (
    APPLIED,
    COLUMNS,
    OPEN_STATES,
    REJECTED,
    Command,
    command_of_row,
)
from knute.gateway.errors import KnuteError

if TYPE_CHECKING:
    from knute.gateway.downlinks import DownlinkLimits


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


def _tell(db: sqlite3.Connection, device_id: int, peer: str, what: str, key_no: int,
          fp: str, base: str = "", reason: str = "") -> None:
    """Set what this gateway keeps telling ``peer`` about a device's rotation."""
    db.execute("INSERT OR REPLACE INTO dl_rekey_out (device_id, gateway, what, key_no, "
               "fingerprint, base, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (device_id, peer, what, key_no, fp, base, reason, time.time()))


class DownlinkRekey:
    """The key-rotation methods of ``DownlinkStore`` (a mixin: the store gives what is
    declared here)."""

    gateway_id: str
    peers: tuple[str, ...]
    stride: tuple[int, int]
    limits: DownlinkLimits
    _db: sqlite3.Connection
    _lock: threading.Lock

    if TYPE_CHECKING:
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        @staticmethod
        def _ensure(db: sqlite3.Connection, device_id: int) -> None: ...

        def _insert(self, db: sqlite3.Connection, device_id: int, op: str, text: str,
                    ref: str | None, now: float, expires_at: float
                    ) -> tuple[Command, bool]: ...

        def get(self, device_id: int, cmd_id: int) -> Command | None: ...

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
        cmd_row = db.execute(f"SELECT row, {COLUMNS} FROM dl_commands WHERE device_id = ? AND "
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
        return command_of_row((*cmd_row[1:4], text, state, *cmd_row[6:8], now, cmd_row[9], result,
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

"""Per device, the uplinks the data-rate rule rests on, kept in the registry database.

The rule itself is ``gateway.adr.decide`` (pure); this is its memory: for each
device the best SNR any receiver reported of each of its last ``history``
uplinks, and the transmit power the gateway last set. Both live in the registry
file (tables ``adr_devices`` and ``adr_uplinks``, next to the downlink tables),
so a gateway restart neither resets a history that took hours of a meter's
uplinks to gather nor forgets a power it set.

An uplink is one row per (device, epoch, fcnt) holding the best SNR reported of
it: a receiver that reports later (another gateway on the same registry file,
another gateway's claim over the broker) raises the row, never adds one. Each
call is one ``BEGIN IMMEDIATE`` transaction, so gateways that share one registry
file never both decide on one history: the first that finds a change clears the
history in the same transaction, and the other then finds too few uplinks.

A decision (``observe(..., decide=True)``) is taken only by the gateway that
answers the uplink; the others only record. When a gateway learns of a change
another gateway made (the ``adr-`` command arrives with the sender's notice),
``follow`` takes its power and starts a new history, as the sender did.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from itertools import pairwise
from typing import Any

from knute.gateway.adr import (
    HISTORY,
    INSTALLATION_MARGIN_DB,
    POWER_MAX_DBM,
    SNR_FLOOR_DB,
    AdrDecision,
    decide,
    margin_db,
)
from knute.gateway.dbfile import immediate
from knute.gateway.errors import KnuteError

HYSTERESIS_DB = 2.0       # the gateway's default (docs/radio.md)
MAX_STEPS = 2             # margin-spending steps per decision, the gateway's default
FALLBACK_MISSED = 3       # after a change, silent this many send intervals too long: fall back
HOLD_HISTORIES = 3        # after a fallback, no margin-spending step for this many histories
MIN_INTERVAL_S = 60.0     # a send interval is taken as at least this (bursts, clock steps)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS adr_devices (
        device_id     INTEGER PRIMARY KEY,
        power_dbm     INTEGER NOT NULL,
        last_ref      TEXT,
        prev_dbm      INTEGER,
        prev_sf       INTEGER,
        void          INTEGER NOT NULL DEFAULT 0,
        spent         INTEGER NOT NULL DEFAULT 0,
        changed_at    REAL,
        interval_s    REAL,
        hold          INTEGER NOT NULL DEFAULT 0,
        last_at       REAL
    )""",
    """CREATE TABLE IF NOT EXISTS adr_uplinks (
        row       INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id INTEGER NOT NULL,
        epoch     INTEGER NOT NULL,
        fcnt      INTEGER NOT NULL,
        sf        INTEGER NOT NULL,
        snr_db    REAL NOT NULL,
        at        REAL NOT NULL,
        UNIQUE (device_id, epoch, fcnt)
    )""",
)
_DEVICE_COLS = ("power_dbm", "last_ref", "prev_dbm", "prev_sf", "void", "spent", "changed_at",
                "interval_s", "hold", "last_at")


class AdrHistory:
    """The rule's per-device history, durable in the registry file at ``path``
    (``":memory:"`` for a history that lives as long as the object)."""

    def __init__(self, path: str = ":memory:", *,
                 installation_margin_db: float = INSTALLATION_MARGIN_DB,
                 history: int = HISTORY, power_dbm: int = POWER_MAX_DBM,
                 hysteresis_db: float = HYSTERESIS_DB, max_steps: int | None = MAX_STEPS
                 ) -> None:
        self.path = path
        self.installation_margin_db = installation_margin_db
        self.history = history
        self.default_power_dbm = power_dbm      # what a node runs before ADR sets it
        self.hysteresis_db = hysteresis_db
        self.max_steps = max_steps
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0,
                                       isolation_level=None)
            # The registry is in WAL mode: NORMAL loses at most the last rows at a power
            # cut, never the file. A lost SNR row costs nothing; a lost change is taken
            # again from its command (``follow``), which the downlink store syncs fully.
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                for stmt in _SCHEMA:
                    db.execute(stmt)
        except sqlite3.Error as exc:
            raise KnuteError(f"registry {path}: data-rate tables: {exc}") from None

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        return immediate(self._db, self._lock)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _device(self, db: sqlite3.Connection, device_id: int) -> dict[str, Any]:
        row = db.execute(f"SELECT {', '.join(_DEVICE_COLS)} FROM adr_devices "
                         "WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            db.execute("INSERT INTO adr_devices (device_id, power_dbm) VALUES (?, ?)",
                       (device_id, self.default_power_dbm))
            return self._device(db, device_id)
        return dict(zip(_DEVICE_COLS, row, strict=True))

    def _power(self, db: sqlite3.Connection, device_id: int) -> tuple[int, str | None]:
        dev = self._device(db, device_id)
        return int(dev["power_dbm"]), dev["last_ref"]

    def observe(self, device_id: int, fcnt: int, best_snr_db: float | None,
                sf: int | None, *, epoch: int = 0, at: float | None = None,
                decide_as: str | None = None, change_open: bool = False
                ) -> AdrDecision | None:
        """Note one uplink, heard at ``at`` (default: now); with ``decide_as`` (the ref
        the command will travel under) also run the rule, and when it changes the
        node's settings take the change in the same transaction (new power, new
        history) and return it.

        Every uplink counts for the fallback: after a change that spent margin, an
        uplink that comes more than ``FALLBACK_MISSED`` + 1 send intervals after the
        last one any receiver heard returns the node to the settings it had
        (``AdrDecision.fallback``), also while that change is still open
        (``change_open``: sent, its report lost). Time, not the frame counter: a node
        skips counters at every restart, and each change is applied by one. Its SNR
        joins the history only when no change is open (uplinks at settings the node
        is leaving would mislead the next decision)."""
        if sf not in SNR_FLOOR_DB:
            return None
        assert sf is not None
        at = time.time() if at is None else at
        with self._write() as db:
            dev = self._device(db, device_id)
            last_at = dev["last_at"]
            db.execute("UPDATE adr_devices SET last_at = max(coalesce(last_at, 0), ?) "
                       "WHERE device_id = ?", (at, device_id))
            if not change_open:
                self._same_sf(db, device_id, sf)
            if best_snr_db is not None and not change_open:
                db.execute("INSERT INTO adr_uplinks (device_id, epoch, fcnt, sf, snr_db, at) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, epoch, fcnt) "
                           "DO UPDATE SET snr_db = max(snr_db, excluded.snr_db)",
                           (device_id, epoch, fcnt, sf, float(best_snr_db), at))
                db.execute("DELETE FROM adr_uplinks WHERE device_id = ? AND row NOT IN "
                           "(SELECT row FROM adr_uplinks WHERE device_id = ? "
                           "ORDER BY row DESC LIMIT ?)", (device_id, device_id, self.history))
            if decide_as is None:
                return None
            snrs = [float(r[0]) for r in db.execute(
                "SELECT snr_db FROM adr_uplinks WHERE device_id = ? ORDER BY row",
                (device_id,))]
            power = int(dev["power_dbm"])
            interval = dev["interval_s"]
            if (dev["spent"] and not dev["void"] and interval and last_at is not None
                    and dev["changed_at"] is not None and last_at >= dev["changed_at"]
                    and at - last_at > (FALLBACK_MISSED + 1) * interval):
                best = max([*snrs, *([] if best_snr_db is None else [best_snr_db])],
                           default=None)
                back = AdrDecision(
                    int(dev["prev_sf"]), int(dev["prev_dbm"]),
                    0.0 if best is None else round(
                        margin_db(best, sf, self.installation_margin_db), 2),
                    0, True, fallback=True)
                self._take(db, device_id, back, decide_as, sf=sf, at=at,
                           hold=HOLD_HISTORIES * self.history)
                return back
            if change_open:
                return None
            hold = int(dev["hold"])
            if hold:
                db.execute("UPDATE adr_devices SET hold = hold - 1 WHERE device_id = ?",
                           (device_id,))
            got = decide(snrs, sf, power, installation_margin_db=self.installation_margin_db,
                         history=self.history, hysteresis_db=self.hysteresis_db,
                         max_steps=0 if hold else self.max_steps)
            if got is None or not got.changed:
                return None
            self._take(db, device_id, got, decide_as, sf=sf, at=at, hold=max(0, hold - 1))
            return got

    def _same_sf(self, db: sqlite3.Connection, device_id: int, sf: int) -> None:
        """An uplink at another SF than the history's starts a fresh one. The node moved
        by itself: its own back-off raised it (docs/radio.md, "A node's own back-off"),
        which restores the power before the SF, so with the SF up the power is taken to
        be the default again; or a change this gateway did not learn of lowered it. The
        history's SNRs belong to the old settings, and the fallback's watch is over."""
        row = db.execute("SELECT sf FROM adr_uplinks WHERE device_id = ? ORDER BY row DESC "
                         "LIMIT 1", (device_id,)).fetchone()
        if row is None or int(row[0]) == sf:
            return
        db.execute("DELETE FROM adr_uplinks WHERE device_id = ?", (device_id,))
        if sf > int(row[0]):
            db.execute("UPDATE adr_devices SET power_dbm = ?, spent = 0 WHERE device_id = ?",
                       (self.default_power_dbm, device_id))

    @staticmethod
    def _interval(db: sqlite3.Connection, device_id: int) -> float | None:
        """The node's send interval as its history shows it: the median time between
        two uplinks heard, at least ``MIN_INTERVAL_S`` (None with fewer than two)."""
        times = [float(r[0]) for r in db.execute(
            "SELECT at FROM adr_uplinks WHERE device_id = ? ORDER BY row", (device_id,))]
        gaps = sorted(b - a for a, b in pairwise(times) if b > a)
        return max(gaps[len(gaps) // 2], MIN_INTERVAL_S) if gaps else None

    def _take(self, db: sqlite3.Connection, device_id: int, decision: AdrDecision, ref: str,
              *, sf: int, at: float, hold: int) -> None:
        """A decision of this gateway: the node's new power, what it had, a new history."""
        dev = self._device(db, device_id)
        power = int(dev["power_dbm"])
        spent = decision.sf < sf or decision.power_dbm < power
        interval = self._interval(db, device_id) or dev["interval_s"]
        db.execute("UPDATE adr_devices SET power_dbm = ?, last_ref = ?, prev_dbm = ?, "
                   "prev_sf = ?, void = 0, spent = ?, changed_at = ?, interval_s = ?, "
                   "hold = ? WHERE device_id = ?",
                   (decision.power_dbm, ref, power, sf, int(spent), at, interval, hold,
                    device_id))
        db.execute("DELETE FROM adr_uplinks WHERE device_id = ?", (device_id,))

    def follow(self, device_id: int, ref: str, power_dbm: int | None, *,
               sf: int | None = None, void: bool = False) -> bool:
        """The device's latest change went under ``ref`` (made here or by another gateway,
        setting ``sf`` and ``power_dbm``): unless it is the one already taken, take its
        power and start a new history; a change that spent margin is watched for the
        fallback as if made here, from the last uplink heard. ``void``: the node never
        applied it (rejected, expired, cancelled), so the power it had before stays.
        True if anything changed."""
        with self._lock:        # the usual case, the change already taken: no write
            row = self._db.execute("SELECT last_ref, void FROM adr_devices WHERE "
                                   "device_id = ?", (device_id,)).fetchone()
        if row is not None and row[0] == ref and (not void or row[1]):
            return False
        with self._write() as db:
            dev = self._device(db, device_id)
            power = int(dev["power_dbm"])
            if dev["last_ref"] != ref:
                heard = db.execute("SELECT sf FROM adr_uplinks WHERE device_id = ? "
                                   "ORDER BY row DESC LIMIT 1", (device_id,)).fetchone()
                was_sf = None if heard is None else int(heard[0])
                new_power = power if void or power_dbm is None else power_dbm
                spent = not void and (new_power < power or (
                    sf is not None and was_sf is not None and sf < was_sf))
                interval = self._interval(db, device_id) or dev["interval_s"]
                db.execute("UPDATE adr_devices SET power_dbm = ?, last_ref = ?, prev_dbm = ?, "
                           "prev_sf = ?, void = ?, spent = ?, changed_at = last_at, "
                           "interval_s = ? WHERE device_id = ?",
                           (new_power, ref, power, was_sf if was_sf is not None else sf,
                            int(void), int(spent), interval, device_id))
                db.execute("DELETE FROM adr_uplinks WHERE device_id = ?", (device_id,))
                return True
            if not void or dev["void"]:
                return False
            prev = dev["prev_dbm"]
            db.execute("UPDATE adr_devices SET power_dbm = ?, void = 1 WHERE device_id = ?",
                       (power if prev is None else int(prev), device_id))
            return True

    def raise_snr(self, device_id: int, fcnt: int, snr_db: float,
                  at: float | None = None) -> bool:
        """Another receiver's SNR of uplink ``fcnt`` (another gateway's claim): it raises
        that uplink's row if the history holds it (a claim heard after the gather time),
        and counts as the node heard at ``at`` (default: now) for the fallback. True if
        it raised a row."""
        at = time.time() if at is None else at
        with self._write() as db:
            db.execute("UPDATE adr_devices SET last_at = ? WHERE device_id = ? AND "
                       "coalesce(last_at, 0) < ?", (at, device_id, at))
            cur = db.execute(
                "UPDATE adr_uplinks SET snr_db = ? WHERE row = (SELECT max(row) FROM "
                "adr_uplinks WHERE device_id = ? AND fcnt = ?) AND snr_db < ?",
                (float(snr_db), device_id, fcnt, float(snr_db)))
            return cur.rowcount > 0

    def snr_history(self, device_id: int) -> list[float]:
        """The best SNR of each uplink in the device's history, oldest first."""
        with self._lock:
            return [float(r[0]) for r in self._db.execute(
                "SELECT snr_db FROM adr_uplinks WHERE device_id = ? ORDER BY row",
                (device_id,))]

    def power_dbm(self, device_id: int) -> int:
        """The transmit power the gateway believes the node uses."""
        with self._lock:
            return self._power(self._db, device_id)[0]

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
from collections.abc import Iterator
from contextlib import contextmanager

from knute.gateway.adr import (
    HISTORY,
    INSTALLATION_MARGIN_DB,
    POWER_MAX_DBM,
    SNR_FLOOR_DB,
    AdrDecision,
    decide,
)
from knute.gateway.errors import KnuteError

HYSTERESIS_DB = 2.0       # the gateway's default (docs/radio.md)
MAX_STEPS = 2             # margin-spending steps per decision, the gateway's default

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS adr_devices (
        device_id INTEGER PRIMARY KEY,
        power_dbm INTEGER NOT NULL,
        last_ref  TEXT,
        prev_dbm  INTEGER,
        void      INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS adr_uplinks (
        row       INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id INTEGER NOT NULL,
        epoch     INTEGER NOT NULL,
        fcnt      INTEGER NOT NULL,
        sf        INTEGER NOT NULL,
        snr_db    REAL NOT NULL,
        UNIQUE (device_id, epoch, fcnt)
    )""",
)


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
            with self._write() as db:
                for stmt in _SCHEMA:
                    db.execute(stmt)
        except sqlite3.Error as exc:
            raise KnuteError(f"registry {path}: data-rate tables: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _power(self, db: sqlite3.Connection, device_id: int) -> tuple[int, str | None]:
        row = db.execute("SELECT power_dbm, last_ref FROM adr_devices WHERE device_id = ?",
                         (device_id,)).fetchone()
        return (self.default_power_dbm, None) if row is None else (int(row[0]), row[1])

    def observe(self, device_id: int, fcnt: int, best_snr_db: float | None,
                sf: int | None, *, epoch: int = 0, decide_as: str | None = None
                ) -> AdrDecision | None:
        """Note one uplink's best SNR; with ``decide_as`` (the ref the command will
        travel under) also run the rule, and when it changes the node's settings take
        the change in the same transaction (new power, new history) and return it."""
        if best_snr_db is None or sf not in SNR_FLOOR_DB:
            return None
        assert sf is not None
        with self._write() as db:
            db.execute("INSERT INTO adr_uplinks (device_id, epoch, fcnt, sf, snr_db) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, epoch, fcnt) "
                       "DO UPDATE SET snr_db = max(snr_db, excluded.snr_db)",
                       (device_id, epoch, fcnt, sf, float(best_snr_db)))
            db.execute("DELETE FROM adr_uplinks WHERE device_id = ? AND row NOT IN "
                       "(SELECT row FROM adr_uplinks WHERE device_id = ? "
                       "ORDER BY row DESC LIMIT ?)", (device_id, device_id, self.history))
            if decide_as is None:
                return None
            snrs = [float(r[0]) for r in db.execute(
                "SELECT snr_db FROM adr_uplinks WHERE device_id = ? ORDER BY row",
                (device_id,))]
            power, _ref = self._power(db, device_id)
            got = decide(snrs, sf, power, installation_margin_db=self.installation_margin_db,
                         history=self.history, hysteresis_db=self.hysteresis_db,
                         max_steps=self.max_steps)
            if got is None or not got.changed:
                return None
            self._take(db, device_id, got.power_dbm, decide_as)
            return got

    def _take(self, db: sqlite3.Connection, device_id: int, power_dbm: int, ref: str,
              void: bool = False) -> None:
        before, _ref = self._power(db, device_id)
        db.execute("INSERT INTO adr_devices (device_id, power_dbm, last_ref, prev_dbm, void) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                   "power_dbm = excluded.power_dbm, last_ref = excluded.last_ref, "
                   "prev_dbm = excluded.prev_dbm, void = excluded.void",
                   (device_id, before if void else power_dbm, ref, before, int(void)))
        db.execute("DELETE FROM adr_uplinks WHERE device_id = ?", (device_id,))

    def raise_snr(self, device_id: int, fcnt: int, snr_db: float) -> bool:
        """Another receiver's SNR of uplink ``fcnt`` that came late (a claim heard after
        the gather time): it raises that uplink's row if the history holds it. True if
        it did."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE adr_uplinks SET snr_db = ? WHERE row = (SELECT max(row) FROM "
                "adr_uplinks WHERE device_id = ? AND fcnt = ?) AND snr_db < ?",
                (float(snr_db), device_id, fcnt, float(snr_db)))
            return cur.rowcount > 0

    def follow(self, device_id: int, ref: str, power_dbm: int | None, *,
               void: bool = False) -> bool:
        """The device's latest change went under ``ref`` (made here or by another gateway):
        unless it is the one already taken, take its power and start a new history.
        ``void``: the node never applied it (rejected, expired, cancelled), so the power
        it had before stays. True if anything changed."""
        with self._write() as db:
            power, last = self._power(db, device_id)
            if last != ref:
                self._take(db, device_id, power if power_dbm is None else power_dbm, ref,
                           void)
                return True
            if not void:
                return False
            row = db.execute("SELECT prev_dbm, void FROM adr_devices WHERE device_id = ?",
                             (device_id,)).fetchone()
            if row[1]:
                return False
            db.execute("UPDATE adr_devices SET power_dbm = ?, void = 1 WHERE device_id = ?",
                       (power if row[0] is None else int(row[0]), device_id))
            return True

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

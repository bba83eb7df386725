"""Store versions: a version 1 file is migrated (and its series goes on filling); a newer
or foreign database is refused by name, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from knute.backend.hours import meter_reading, rebuild
from knute.backend.store import SCHEMA_VERSION, StoreError
from knute.backend.store_sqlite import _SCHEMA_V1, Store
from knute.tools.rig.postgres import PostgresCluster
from tests.backend.factory import HOUR_S, T0, reading


def _version_1_file(path: Path) -> None:
    """A store as version 1 wrote it: readings and hours, no slots or anchors tables."""
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1)
    doc = reading("00000001", 1, T0 + 6 * HOUR_S, [2.0] * 6, 12.0)
    r = meter_reading(doc)
    db.execute("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)",
               (doc["id"], doc["device"], doc["kind"], 1, r.received_at, 12.0,
                json.dumps([[s.start, s.litres] for s in r.slots]), "[]", json.dumps(doc)))
    db.executemany("INSERT INTO hours VALUES (?,?,?,?)",
                   [("00000001", h.start, h.litres, h.quality)
                    for h in rebuild([r]).hours.values()])
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_version_1_file_is_migrated_and_its_series_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _version_1_file(path)
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    # The next reading sends only hour 11: hours 6-10 are filled from the anchor
    # the version 1 reading left (index 12 at hour 6), which the migration kept.
    store.add_reading(reading("00000001", 2, T0 + 12 * HOUR_S, [4.0], 26.0))
    hours = store.hours("00000001")
    assert [(h.litres, h.quality) for h in hours[6:11]] == [(2.0, "estimated")] * 5
    assert sum(h.litres for h in hours) == 26.0
    store.close()
    assert Store(path).count_readings() == 2


def test_a_newer_or_foreign_database_on_the_server_is_refused_by_name(
        pg_cluster: PostgresCluster) -> None:
    import psycopg

    from knute.backend.store_pg import PgStore

    newer = pg_cluster.create_database()
    PgStore(newer).close()
    with psycopg.connect(newer, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=r"store schema version 4 is newer than this knute"):
        PgStore(newer)
    foreign = pg_cluster.create_database()
    with psycopg.connect(foreign, autocommit=True) as db:
        db.execute("CREATE TABLE spool (x int)")
    with pytest.raises(StoreError, match=r"t_\w+\?host=.*: not a knute backend store"):
        PgStore(foreign)
    with pytest.raises(StoreError, match=r"cannot connect"):
        PgStore(pg_cluster.url("no_such_database"))


def test_a_lost_server_connection_fails_one_reading_and_the_next_reconnects(
        pg_cluster: PostgresCluster) -> None:
    import psycopg

    from knute.backend.store_pg import PgStore

    url = pg_cluster.create_database()
    store = PgStore(url)
    store.add_reading(reading("00000001", 1, T0 + 6 * HOUR_S, [1.0] * 6, 6.0))
    pid = store.db.info.backend_pid
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    second = reading("00000001", 2, T0 + 12 * HOUR_S, [1.0] * 6, 12.0)
    with pytest.raises(store.errors):
        store.add_reading(second)        # left unacknowledged: the broker sends it again
    assert store.add_reading(second) == "stored"
    assert store.reconnects == 1 and store.count_readings() == 2
    assert sum(h.litres for h in store.hours("00000001")) == 12.0

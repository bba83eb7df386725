"""The stores: idempotent on id, count what they saw, versioned, never a litre twice.

Every test with the ``store`` fixture runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from knute.backend.store import SCHEMA_VERSION, SqlStore, StoreError
from knute.backend.store_sqlite import Store
from tests.backend.factory import HOUR_S, T0, reading


def test_a_reading_is_stored_once_and_duplicates_are_counted(store: SqlStore) -> None:
    doc = reading("00000001", 10, T0 + 6 * HOUR_S, [1, 2, 3, 4, 5, 6], 21)
    assert store.add_reading(doc) == "stored"
    assert store.add_reading(dict(doc)) == "duplicate"
    assert store.count_readings() == 1
    assert sum(h.litres for h in store.hours("00000001")) == 21
    assert store.counters() == {"stored": 1, "duplicate": 1}


def test_a_late_reading_is_stored_counted_and_fills_its_hours(store: SqlStore) -> None:
    first = reading("00000001", 1, T0 + 6 * HOUR_S, [1] * 6, 6)
    third = reading("00000001", 3, T0 + 18 * HOUR_S, [3] * 6, 36)
    second = reading("00000001", 2, T0 + 12 * HOUR_S, [2] * 6, 18)
    assert [store.add_reading(d) for d in (first, third, second)] == ["stored", "stored", "late"]
    hours = store.hours("00000001")
    assert [h.litres for h in hours] == [1] * 6 + [2] * 6 + [3] * 6
    assert store.counters()["late"] == 1


def test_an_id_reused_a_day_later_is_a_new_reading(store: SqlStore) -> None:
    old = reading("00000001", 5, T0 + 6 * HOUR_S, [1] * 6, 6)
    reused = reading("00000001", 5, T0 + 30 * 24 * HOUR_S, [2], 80)
    assert store.add_reading(old) == "stored"
    assert store.add_reading(reused) == "stored"
    assert store.add_reading(dict(reused)) == "duplicate"
    assert store.count_readings() == 2 and store.counters()["reused_id"] == 1


def test_a_replaced_meter_is_its_own_series_and_the_address_sums_both(store: SqlStore) -> None:
    # The old meter (index 5000) is replaced by a new device (index from 0) at the
    # same address: each series keeps its own litres, none counted twice.
    store.add_reading(reading("00000001", 40, T0 + 6 * HOUR_S, [2] * 6, 5000))
    store.add_reading(reading("00000009", 1, T0 + 12 * HOUR_S, [3] * 6, 18))
    assert sum(h.litres for h in store.hours("00000001")) == 12
    assert sum(h.litres for h in store.hours("00000009")) == 18


def test_a_counter_reset_with_the_index_going_backwards_is_recorded(store: SqlStore) -> None:
    store.add_reading(reading("00000001", 40, T0 + 6 * HOUR_S, [2] * 6, 5000))
    store.add_reading(reading("00000001", 1, T0 + 14 * HOUR_S, [1] * 2, 3, id_="00000001:e1:1"))
    litres = {h.start: h.litres for h in store.hours("00000001")}
    assert sum(litres.values()) == 12 + 2                   # hours 6..11 stay missing
    assert store.index_steps("00000001") == [(T0 + 12 * HOUR_S, 5000, 1)]


def test_the_file_is_wal_and_versioned_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    store = Store(path)
    store.add_reading(reading("00000001", 1, T0 + HOUR_S, [4], 4))
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert Store(path).count_readings() == 1


def test_a_newer_or_foreign_file_is_refused_by_name(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=rf"newer\.sqlite: store schema version "
                                         rf"{SCHEMA_VERSION + 1} is newer"):
        Store(newer)
    foreign = tmp_path / "spool.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE spool (x)")
    db.close()
    with pytest.raises(StoreError, match=r"spool\.sqlite: not a knute backend store"):
        Store(foreign)


def test_a_polled_meters_running_hour_is_kept_running_in_the_store(store: SqlStore) -> None:
    # Poll at 02:57 (hour 02 still running), then at 03:02 (hour 02 closed, 1,045 L).
    early = reading("1000a001", 1, T0 + 3 * HOUR_S, [1045, 993], 10_000,
                    received_delay_s=-180)
    late = reading("1000a001", 2, T0 + 4 * HOUR_S, [1045, 1045, 40], 10_092,
                   received_delay_s=-3480)
    for doc in (early, late):
        doc["source"] = "modbus"
    store.add_reading(early)
    assert [(h.start, h.litres) for h in store.hours("1000a001")] == [(T0 + HOUR_S, 1045)]
    store.add_reading(late)
    assert [(h.start, h.litres) for h in store.hours("1000a001")] == [
        (T0 + HOUR_S, 1045), (T0 + 2 * HOUR_S, 1045)]
    # Rebuilt from the stored rows, the series is the one built as readings came.
    from knute.backend.hours import rebuild
    assert rebuild(store.readings_of("1000a001")).hours == {
        h.start: h for h in store.hours("1000a001")}

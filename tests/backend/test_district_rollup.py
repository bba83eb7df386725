"""The district rollup kept at ingest answers as the bare query over the households' hours.

On both stores: meters with drops, repeats, reordering, replaced meters and
estimated hours (``meter_history``) fill the series reading by reading; at
every step the rollup of each district equals ``household_totals`` over its
households. A changed household list is summed again; a version-2 store gains
the rollup's tables and keeps its data.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knute.backend import queries
from knute.backend.config import District
from knute.backend.hours import MeterReading
from knute.backend.service import district_balances as meter_by_meter
from knute.backend.store import SCHEMA_VERSION, SqlStore
from knute.backend.store_sqlite import Store
from tests.backend.conftest import StoreFactory
from tests.backend.factory import HOUR_S, T0, reading
from tests.backend.test_hours_property import meter_history
from tests.backend.test_store_queries import doc_of

_runs = itertools.count()
SPAN = (T0 - 20 * HOUR_S, T0 + 100 * HOUR_S)


def _same(store: SqlStore, name: str, households: list[str]) -> None:
    rolled = store.district_totals(name, households, *SPAN)
    bare = store.household_totals(households, *SPAN)
    assert rolled.keys() == bare.keys()
    for hour, (litres, known, estimated) in bare.items():
        assert rolled[hour][1:] == (known, estimated), hour
        assert rolled[hour][0] == pytest.approx(litres, abs=1e-6), hour


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.lists(meter_history(), min_size=3, max_size=3),
       order=st.randoms(use_true_random=False))
def test_the_rollup_equals_the_bare_query_reading_by_reading(
        store: SqlStore, histories: list[tuple[list[int], list[MeterReading]]],
        order: object) -> None:
    run = next(_runs)
    meters = [f"{run:04x}{k:04x}" for k in range(3)]
    # Two districts: meters 0 and 1, and meter 1 and 2 (a meter may feed both).
    districts = {f"a{run}": meters[:2], f"b{run}": meters[1:]}
    store.set_districts(districts)
    docs = [doc_of(meter, r) for meter, (_, readings) in zip(meters, histories, strict=True)
            for r in readings]
    order.shuffle(docs)  # type: ignore[attr-defined]
    for doc in docs:
        store.add_reading(doc)
        for name, households in districts.items():
            _same(store, name, households)


def test_a_changed_household_list_is_summed_again_and_balances_agree(
        store_factory: StoreFactory) -> None:
    store = store_factory.new()
    homes = ["00000101", "00000102", "00000103"]
    for k, home in enumerate(homes):
        for end in (6, 12):
            store.add_reading(reading(home, end, T0 + end * HOUR_S, [float(k + 1)] * 6,
                                      float((k + 1) * end)))
    assert store.set_districts({"sentrum": homes[:2]}) == ["sentrum"]
    assert store.set_districts({"sentrum": homes[:2]}) == []        # unchanged: kept
    _same(store, "sentrum", homes[:2])
    assert store.district_totals("sentrum", homes[:2], T0, T0 + HOUR_S) == {T0: (3.0, 2, 0)}
    # The list changed (a third house): the stored rollup is not used until summed again.
    assert store.district_totals("sentrum", homes, T0, T0 + HOUR_S) == {T0: (6.0, 3, 0)}
    assert store.set_districts({"sentrum": homes}) == ["sentrum"]
    _same(store, "sentrum", homes)
    # Balances read from the rollup equal the rule applied meter by meter.
    inlet = "1000a001"
    district = District("sentrum", (inlet,), (), tuple(homes), 3)
    store.add_reading(reading(inlet, 12, T0 + 12 * HOUR_S, [7.0] * 12, 84.0))
    rolled = queries.district_balances(store, district, T0, T0 + 12 * HOUR_S)
    assert [b.loss_l for b in rolled] == [1.0] * 12
    assert rolled == meter_by_meter(store, district, T0, T0 + 12 * HOUR_S)
    # A district no longer named loses its rollup.
    assert store.set_districts({}) == []
    assert store._x("SELECT count(*) FROM district_hours").fetchone()[0] == 0


def _downgrade_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("DROP TABLE district_hours")
    db.execute("DROP TABLE districts")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()


def test_a_version_2_store_gains_the_rollup(store_factory: StoreFactory) -> None:
    store = store_factory.new()
    store.add_reading(reading("00000101", 6, T0 + 6 * HOUR_S, [2.0] * 6, 12.0))
    where = store_factory.where[id(store)]
    store.close()
    if isinstance(store, Store):
        _downgrade_sqlite(Path(where))
    else:
        import psycopg

        with psycopg.connect(where, autocommit=True) as db:
            db.execute("DROP TABLE district_hours")
            db.execute("DROP TABLE districts")
            db.execute("UPDATE schema_version SET version = 2")
    again = store_factory.reopen(store)
    if isinstance(again, Store):
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    else:
        assert again._x("SELECT version FROM schema_version").fetchone()[0] == 3
    assert again.set_districts({"sentrum": ["00000101"]}) == ["sentrum"]
    assert again.district_totals("sentrum", ["00000101"], T0, T0 + 6 * HOUR_S) == {
        T0 + h * HOUR_S: (2.0, 1, 0) for h in range(6)}
    assert json.loads(json.dumps(again.counters())) == {"stored": 1}

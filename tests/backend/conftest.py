"""The backend's store fixtures: every store test runs on SQLite and on PostgreSQL.

``pg_cluster`` is one throwaway PostgreSQL cluster per test session (per
pytest-xdist worker): ``initdb`` into a temporary folder, a unix socket, a
random port (``tools.rig.postgres``); stopped when the session ends.
``store_factory`` opens stores of the parametrized kind: a new SQLite file or
a new database on the cluster for each call (``store_factory.reopen(store)``
opens the same one again); ``store`` is one such store. The postgres variants
are in the ``process`` tier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from knute.backend.store import SqlStore
from knute.backend.store_sqlite import Store
from knute.tools.rig.postgres import PostgresCluster

STORE_KINDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.process)]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the session (started on first use)."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


class StoreFactory:
    """Opens stores of one kind; closes them all at the end of the test."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.request = request
        self.opened: list[SqlStore] = []
        self.where: dict[int, str] = {}

    def new(self) -> SqlStore:
        """A fresh, empty store."""
        if self.kind == "sqlite":
            where = str(self.tmp_path / f"store{len(self.opened)}.sqlite")
        else:
            cluster: PostgresCluster = self.request.getfixturevalue("pg_cluster")
            where = cluster.create_database()
        return self._open(where)

    def reopen(self, store: SqlStore) -> SqlStore:
        """Another connection to ``store``'s database (another consumer, or after a restart)."""
        return self._open(self.where[id(store)])

    def _open(self, where: str) -> SqlStore:
        if self.kind == "sqlite":
            store: SqlStore = Store(where)
        else:
            from knute.backend.store_pg import PgStore

            store = PgStore(where)
        self.opened.append(store)
        self.where[id(store)] = where
        return store

    def close(self) -> None:
        for store in self.opened:
            with contextlib.suppress(Exception):
                store.close()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores of the kind this test variant runs on."""
    factory = StoreFactory(str(request.param), tmp_path, request)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> SqlStore:
    """A fresh store of this variant's kind."""
    return store_factory.new()

"""``knute bench backend`` runs end to end on a small city and reports every figure."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def _port_taken(port: int) -> Iterator[None]:
    """Hold ``port`` on 127.0.0.1 (or leave it to whoever already holds it)."""
    sock = socket.socket()
    try:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            pass                    # already taken: what the bench must live with anyway
        yield
    finally:
        sock.close()


@pytest.mark.parametrize("stores", ["sqlite", "sqlite,postgres"])
def test_the_backend_bench_reports_each_store_side_by_side(knute_bin: Path,
                                                           stores: str) -> None:
    # The backend's default web port is busy (another bench, a backend on this box): the
    # bench measures ingest and must not need it.
    with _port_taken(8080):
        done = subprocess.run(
            [str(knute_bin), "bench", "backend", "--json", "--stores", stores,
             "--readings", "40", "--ingest-meters", "4", "--district-meters", "20",
             "--days", "3", "--city-meters", "50"], capture_output=True, text=True,
            timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert list(figures) == stores.split(",")
    for store in figures.values():
        ingest = store["ingest"]
        assert ingest["readings"] == ingest["stored"] == 40
        assert min(ingest["mqtt_consumer_per_s"], ingest["add_reading_per_s"],
                   ingest["add_reading_unbatched_per_s"], ingest["bare_insert_per_s"]) > 0
        assert min(store["district_daily_balance_s"], store["district_daily_balance_bare_s"],
                   store["district_rollup_build_s"]) >= 0
        assert store["hourly_values"] == 20 * 72 + 72 + 30 * 24
        assert store["bytes_per_hourly_value"] > 8
        assert store["city_meters"] == 51 and store["days"] == 3


def test_an_unknown_store_is_one_line(knute_bin: Path) -> None:
    done = subprocess.run([str(knute_bin), "bench", "backend", "--stores", "mysql"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "--stores: expected a comma-separated list of sqlite, postgres, got 'mysql'")

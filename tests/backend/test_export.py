"""Exports read back: CSV and Parquet of hourly consumption and district balances.

The files are read with the csv module and pyarrow and compared with the
store's own series and balances, on both stores; ``knute backend export`` runs
as a process on a store the backend wrote.
"""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from knute.backend import export, queries
from knute.backend.config import District
from knute.backend.hours import format_hour
from knute.backend.store import SqlStore
from knute.backend.store_sqlite import Store
from tests.backend.factory import HOUR_S, T0, reading

DISTRICT = District("sentrum", ("1000a001",), (), ("00000001", "00000002", "00000003"), 3)


def _fill(store: SqlStore) -> None:
    for end in (6, 12, 24):          # the reading of hours 12-17 is lost: estimated hours
        store.add_reading(reading("1000a001", end, T0 + end * HOUR_S, [30.0] * 6, 30.0 * end))
        store.add_reading(reading("00000001", end, T0 + end * HOUR_S, [1.0] * 6, 1.0 * end))
        if end != 24:
            store.add_reading(reading("00000002", end, T0 + end * HOUR_S, [2.0] * 6,
                                      2.0 * end))
    store.add_reading(reading("00000003", 1, T0 + 18 * HOUR_S, [3.0] * 6, 3.0 * 18))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_hourly_consumption_to_csv_and_parquet_reads_back(store: SqlStore,
                                                          tmp_path: Path) -> None:
    _fill(store)
    devices = ["00000001", "00000002", "00000003"]
    want = [(d, h.start, h.litres, h.quality) for d in devices for h in store.hours(d)]
    n = export.write(tmp_path / "h.csv", "csv", export.HOURS_COLUMNS,
                     export.hour_rows(store, devices, None, None))
    assert n == len(want) == 24 + 12 + 6
    rows = _csv(tmp_path / "h.csv")
    assert list(rows[0]) == list(export.HOURS_COLUMNS)
    assert [(r["device"], r["hour"], float(r["litres"]), r["quality"]) for r in rows] == [
        (d, format_hour(h), v, q) for d, h, v, q in want]
    assert {r["quality"] for r in rows} == {"measured", "estimated"}
    export.write(tmp_path / "h.parquet", "parquet", export.HOURS_COLUMNS,
                 export.hour_rows(store, devices, None, None))
    table = pq.read_table(tmp_path / "h.parquet").to_pylist()
    assert [(r["device"], int(r["hour"].timestamp()), r["litres"], r["quality"])
            for r in table] == want
    # Parquet has no second unit: the hours are stored as UTC milliseconds.
    assert str(pq.read_schema(tmp_path / "h.parquet").field("hour").type) == \
        "timestamp[ms, tz=UTC]"
    # A time range and one meter.
    export.write(tmp_path / "one.csv", "csv", export.HOURS_COLUMNS, export.hour_rows(
        store, ["00000002"], T0 + 2 * HOUR_S, T0 + 4 * HOUR_S))
    assert [r["hour"] for r in _csv(tmp_path / "one.csv")] == [
        format_hour(T0 + 2 * HOUR_S), format_hour(T0 + 3 * HOUR_S)]


def test_district_balances_to_csv_and_parquet_read_back(store: SqlStore,
                                                        tmp_path: Path) -> None:
    _fill(store)
    want = queries.district_balances(store, DISTRICT, T0, T0 + 24 * HOUR_S)
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"b.{fmt}"
        export.write(out, fmt, export.BALANCE_COLUMNS,
                     export.balance_rows(store, [DISTRICT], T0, T0 + 24 * HOUR_S))
        rows: list[dict[str, Any]] = (_csv(out) if fmt == "csv"
                                      else pq.read_table(out).to_pylist())
        assert len(rows) == 24
        for row, b in zip(rows, want, strict=True):
            def num(v: Any) -> float | None:
                return None if v in ("", None) else float(v)
            assert row["district"] == "sentrum"
            assert num(row["loss_l"]) == b.loss_l and num(row["inflow_l"]) == b.inflow_l
            assert math.isclose(float(row["missing"]), b.missing)
            assert row["complete"] in (b.complete, "true" if b.complete else "false")
    rows = _csv(tmp_path / "b.csv")
    assert rows[0]["complete"] == "false" and rows[0]["missing"] == str(1 / 3)
    assert rows[12]["estimated"] != "0.0"


def test_an_unknown_format_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(export.ExportError, match=r"h\.xlsx: unknown export format 'xlsx'"):
        export.format_of(tmp_path / "h.xlsx", None)
    assert export.format_of(tmp_path / "h.out", "parquet") == "parquet"


def test_knute_backend_export_writes_both_files(knute_bin: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "backend.sqlite")
    _fill(store)
    store.close()
    config = tmp_path / "backend.toml"
    config.write_text('[store]\npath = "backend.sqlite"\n[[district]]\nname = "sentrum"\n'
                      'inflow = ["1000a001"]\nhouseholds = ["00000001", "00000002", '
                      '"00000003"]\n')

    def knute(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(knute_bin), "backend", "export", *args, "--config",
                               str(config)], capture_output=True, text=True, timeout=120)

    done = knute("hours", "--out", str(tmp_path / "all.parquet"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'all.parquet'}: 66 rows (hours, parquet)"
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 66
    done = knute("balances", "--out", str(tmp_path / "b.csv"), "--from", "2026-01-05",
                 "--to", "2026-01-06")
    assert done.returncode == 0, done.stderr
    assert len(_csv(tmp_path / "b.csv")) == 24
    bad = knute("balances", "--out", str(tmp_path / "b.csv"), "--district", "nord")
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(f"--district: 'nord' is not a district of {config}")
    bad = knute("hours", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "unknown export format 'json'" in bad.stderr

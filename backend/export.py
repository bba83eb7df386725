"""Exports for the billing and GIS systems: CSV and Parquet files (``knute backend export``).

- ``hours``: hourly consumption per meter: ``device``, ``hour`` (start, UTC),
  ``litres``, ``quality`` (``measured``, ``index`` or ``estimated``; a missing
  hour has no row).
- ``balances``: hourly water balance per district: ``district``, ``hour``,
  ``inflow_l``, ``outflow_l``, ``households_l``, ``loss_l`` (empty/null when a
  bulk meter's hour is missing), the shares ``measured``, ``estimated``,
  ``missing`` of household hours, and ``complete``.

CSV is UTF-8 with a header row, times in ISO 8601 with ``Z``, empty cells for
unknown values. Parquet (pyarrow, zstd) has typed columns: ``hour`` is a UTC
timestamp (milliseconds, Parquet has no seconds unit), unknown values are
nulls. Rows are written in batches, so a city's year need not fit in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from knute.backend.config import District
from knute.backend.hours import HOUR_S, format_hour
from knute.backend.queries import district_balances
from knute.backend.store import SqlStore

FORMATS = ("csv", "parquet")
BATCH_ROWS = 100_000
HOURS_COLUMNS = ("device", "hour", "litres", "quality")
BALANCE_COLUMNS = ("district", "hour", "inflow_l", "outflow_l", "households_l", "loss_l",
                   "measured", "estimated", "missing", "complete")
_BALANCE_DAYS = 31          # balances are computed a month at a time


class ExportError(Exception):
    """The export cannot be written; the message names the file."""


def format_of(path: Path, given: str | None) -> str:
    """``given``, else the format named by ``path``'s suffix."""
    fmt = given or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ExportError(f"{path}: unknown export format {fmt!r} (give --format csv or "
                          "parquet, or a .csv/.parquet file name)")
    return fmt


def hour_rows(store: SqlStore, devices: Sequence[str] | None, start: int | None,
              end: int | None) -> Iterator[tuple[Any, ...]]:
    """(device, hour start, litres, quality) rows of the hourly series, by device and hour."""
    for device, hour in store.hours_of(devices, start, end):
        yield device, hour.start, hour.litres, hour.quality


def balance_rows(store: SqlStore, districts: Sequence[District], start: int,
                 end: int) -> Iterator[tuple[Any, ...]]:
    """One row per district and hour in [start, end), a month of hours at a time."""
    for district in districts:
        for a in range(start - start % HOUR_S, end, _BALANCE_DAYS * 24 * HOUR_S):
            for b in district_balances(store, district, a,
                                       min(end, a + _BALANCE_DAYS * 24 * HOUR_S)):
                yield (district.name, b.hour, b.inflow_l, b.outflow_l, b.households_l,
                       b.loss_l, b.measured, b.estimated, b.missing, b.complete)


def write(path: Path, fmt: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
    """Write ``rows`` (the hour column as unix seconds) to ``path``; return the row count."""
    try:
        if fmt == "csv":
            return _write_csv(path, columns, rows)
        return _write_parquet(path, columns, rows)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
    hour_at = columns.index("hour")
    n = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            cells = ["" if v is None else v for v in row]
            cells[hour_at] = format_hour(int(row[hour_at]))
            if isinstance(cells[-1], bool):
                cells[-1] = "true" if cells[-1] else "false"
            writer.writerow(cells)
            n += 1
    return n


def _write_parquet(path: Path, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise ExportError(f"{path}: Parquet needs pyarrow (pip install 'knute[backend]')"
                          ) from None
    types = {"device": pa.string(), "district": pa.string(), "quality": pa.string(),
             "hour": pa.timestamp("s", tz="UTC"), "complete": pa.bool_()}
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in columns])
    n = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            arrays = [pa.array([r[i] for r in batch], type=schema.field(i).type)
                      for i in range(len(columns))]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            batch.clear()

        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) >= BATCH_ROWS:
                flush()
        if batch or n == 0:
            flush()
    return n

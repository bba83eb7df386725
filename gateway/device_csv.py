"""The device import file (``knute devices import``): reading, writing and checking it.

The header names the columns; ``device_id``, ``kind`` and ``key`` are
required, ``name``, ``site``, ``interval_s`` (the device's send interval in
seconds for the silent-node alarm; empty: its kind's, and on a registered
device the interval it has) and ``location`` (a JSON object) optional, and
any other column becomes a location entry (e.g. ``address``, ``lat``,
``lon``). Any bad line, an id repeated in the file, a quote left open, a field
over the size limit or a non-finite number rejects the whole file with one
line naming the line. The registry inserts what ``read_csv`` returns.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from knute.gateway.device_fields import (
    check_kind,
    device_row,
    format_device_id,
    location_value,
    parse_interval,
    parse_key,
)
from knute.gateway.errors import KnuteError

CSV_COLUMNS = ("device_id", "kind", "key", "name", "site", "interval_s")


def csv_line(device_id: int, kind: str, key: bytes | str, name: str = "", site: str = "",
             location: Mapping[str, Any] | None = None, interval_s: float | None = None,
             columns: Sequence[str] | None = None) -> str:
    """One CSV line (no header) for ``knute devices import``; columns as CSV_COLUMNS.

    Location metadata (address, lat, lon, ...) goes in a final ``location`` column
    as a JSON object. The provisioning tool writes these lines when it works
    offline; ``csv_header()`` gives the matching header. ``columns``: the header of
    a file written earlier (a line appended to it follows its columns; a value its
    header lacks is left out).
    """
    check_kind(kind)
    raw_key = parse_key(key)
    interval = parse_interval(interval_s)
    cells = {"device_id": format_device_id(device_id), "kind": kind, "key": raw_key.hex(),
             "name": name, "site": site, "interval_s": "" if interval is None else f"{interval:g}",
             "location": (json.dumps(dict(location), sort_keys=True, separators=(",", ":"))
                          if location else "")}
    if columns is None:
        row = [cells[c] for c in CSV_COLUMNS]
        if location:
            row.append(cells["location"])
    else:
        row = [cells.get(c.strip(), "") for c in columns]
        while row and not row[-1]:
            row.pop()
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


def csv_header(with_location: bool = True) -> str:
    """The header line of an import file."""
    cols = [*CSV_COLUMNS, "location"] if with_location else list(CSV_COLUMNS)
    return ",".join(cols) + "\n"



def decode_csv(data: bytes, source: str = "<csv>") -> str:
    """The text of an import file: UTF-8 (with or without a BOM) or UTF-16 with a BOM.

    Anything else (Latin-1, Windows-1252, UTF-16 without a BOM) is one
    KnuteError naming the line and column of the first byte that is not UTF-8.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise KnuteError(f"{source}: not valid UTF-16 at byte {exc.start}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise KnuteError(
            f"{source} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column "
            f"{column}; Latin-1 or Windows-1252?): save the file as UTF-8") from None


def _records(reader: Any, source: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every non-blank record; a record spanning lines is an error.

    A quote left open makes the csv module swallow the following lines (keys
    included) into one field: no knute column holds a line break, so a record
    that runs over several lines is refused, naming where it starts.
    """
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise KnuteError(f"{source} line {start}: {_csv_problem(exc)}") from None
        end = reader.line_num
        if end != start:
            raise KnuteError(f"{source} line {start}: a quoted field runs on to line {end} "
                             "(a quote left open?)")
        if fields and any(f.strip() for f in fields):
            yield start, fields


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit() // 1024} KiB"
    if "unexpected end of data" in text:
        return "a quote is left open up to the end of the file"
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"location: {name} is not a finite number")




def read_csv(text: str, source: str = "<csv>") -> list[tuple[int, tuple[Any, ...]]]:
    """(line, registry row as ``device_row`` makes it) of every device in an import file.

    ``decode_csv`` turns the file's bytes into ``text`` (BOM, UTF-16). The
    first problem is one KnuteError naming ``source`` and the line.
    """
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = _records(reader, source)
    try:
        line, header = next(records)
    except StopIteration:
        raise KnuteError(f"{source}: empty file") from None
    cols = [c.strip() for c in header]
    missing = [c for c in ("device_id", "kind", "key") if c not in cols]
    if missing:
        raise KnuteError(f"{source} line {line}: header lacks column(s) "
                         f"{', '.join(missing)} (found: {', '.join(cols) or 'none'})")
    rows: list[tuple[int, tuple[Any, ...]]] = []
    lines: dict[int, int] = {}
    for line, fields in records:
        if len(fields) > len(cols):
            raise KnuteError(f"{source} line {line}: {len(fields)} fields, the header has "
                             f"{len(cols)} columns (an unquoted comma?)")
        raw = dict(zip(cols, fields, strict=False))
        rec = {k: v.strip() for k, v in raw.items()}
        try:
            location: dict[str, Any] = {}
            if rec.get("location"):
                loaded = json.loads(rec["location"], parse_constant=_no_constant)
                if not isinstance(loaded, dict):
                    raise KnuteError("location must be a JSON object")
                location.update(loaded)
            for col, val in rec.items():
                if col in (*CSV_COLUMNS, "location") or not val:
                    continue
                location[col] = location_value(col, val)
            values = device_row(rec.get("device_id", ""), rec.get("kind", ""),
                                rec.get("key", ""), rec.get("name", ""),
                                rec.get("site", ""), location, rec.get("interval_s"))
        except (KnuteError, ValueError) as exc:
            raise KnuteError(f"{source} line {line}: {exc}") from None
        if values[0] in lines:
            raise KnuteError(
                f"{source} line {line}: device {format_device_id(values[0])} "
                f"appears twice (first on line {lines[values[0]]})")
        lines[values[0]] = line
        rows.append((line, values))
    return rows

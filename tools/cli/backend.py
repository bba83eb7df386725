"""``knute backend``: the city's side of the broker (docs/water.md).

    knute backend run --config FILE       consume readings, store them, raise alerts,
                                          serve the web page (docs/water.md)
    knute backend status --config FILE [--json]
                                          counters, meters and open alerts from the store
    knute backend export hours|balances --config FILE --out FILE [--format csv|parquet]
                         [--from DATE] [--to DATE] [--device ID]... [--district NAME]...
                                          hourly consumption or district balances to a file
    knute backend retention --config FILE [--json]
                                          apply [retention] now (run does it every hour)

The backend itself lives in ``backend/`` and reads only the MQTT contract; this
module turns its errors into the command's one-line errors (exit status 2).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from knute.gateway.errors import KnuteError


def add_arguments(parser: argparse.ArgumentParser, name: str = "backend") -> None:
    """The backend sub-commands."""
    sub = parser.add_subparsers(dest="backend_command", metavar="ACTION", required=True)
    run_cmd = sub.add_parser("run", help="consume readings from MQTT until stopped",
                             description="Subscribe with a persistent session, store every "
                                         "reading once, rebuild hourly series, publish "
                                         "alerts retained on <prefix>/alert/... and serve "
                                         "the web page on [web] host:port")
    run_cmd.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    status = sub.add_parser("status", help="counters, meters and open alerts from the store")
    status.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    status.add_argument("--json", action="store_true", help="print JSON")
    export = sub.add_parser("export", help="hourly consumption or district balances to CSV "
                                           "or Parquet",
                            description="Write the hourly consumption per meter (hours) or "
                                        "the hourly balance per district (balances) for the "
                                        "billing and GIS systems (docs/water.md, Exports).")
    export.add_argument("what", choices=("hours", "balances"))
    export.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    export.add_argument("--out", required=True, help="file to write (.csv or .parquet)")
    export.add_argument("--format", choices=("csv", "parquet"),
                        help="default: from the file name's suffix")
    export.add_argument("--from", dest="start", metavar="DATE",
                        help="first UTC day or time (ISO 8601), default: the beginning")
    export.add_argument("--to", dest="end", metavar="DATE",
                        help="UTC day or time to stop before (ISO 8601), default: now")
    export.add_argument("--device", action="append", default=[],
                        help="hours: only this meter (repeatable); default every meter")
    export.add_argument("--district", action="append", default=[],
                        help="balances: only this district (repeatable); default all")
    retention = sub.add_parser("retention", help="apply the [retention] policy now")
    retention.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    retention.add_argument("--json", action="store_true", help="print JSON")


def _load(path: str) -> Any:
    from knute.backend.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        raise KnuteError(str(exc)) from None


def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    from knute.backend.store import StoreError

    errors: tuple[type[BaseException], ...] = (StoreError, OSError, sqlite3.Error)
    try:
        import psycopg
    except ImportError:
        return errors
    return (*errors, psycopg.Error)


def _where(config: Any) -> str:
    if not config.store_url:
        return str(config.store_path)
    from knute.backend.store_pg import _safe

    return _safe(config.store_url)


def _open(config: Any) -> Any:
    from knute.backend.store import open_store

    if not config.store_url and not config.store_path.exists():
        raise KnuteError(f"store {config.store_path}: no such file (has the backend run?)")
    try:
        return open_store(config)
    except ImportError as exc:
        raise KnuteError(f"store {_where(config)}: needs {exc.name} "
                         "(pip install 'knute[backend]')") from None
    except _store_errors() as exc:
        raise KnuteError(f"store {_where(config)}: {exc}") from None


def _time(text: str | None, option: str, default: float | None) -> int | None:
    from datetime import UTC, datetime

    if text is None:
        return None if default is None else int(default)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise KnuteError(f"{option}: not an ISO 8601 date or time: {text!r}") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def _export(args: argparse.Namespace, config: Any, store: Any) -> int:
    import time
    from pathlib import Path

    from knute.backend import export

    out = Path(args.out)
    try:
        fmt = export.format_of(out, args.format)
        start = _time(args.start, "--from", None)
        end = _time(args.end, "--to", None)
        if args.what == "hours":
            n = export.write(out, fmt, export.HOURS_COLUMNS, export.hour_rows(
                store, args.device or None, start, end))
        else:
            names = {d.name: d for d in config.districts}
            unknown = [name for name in args.district if name not in names]
            if unknown:
                raise KnuteError(f"--district: {unknown[0]!r} is not a district of "
                                 f"{config.path}")
            chosen = [names[n] for n in args.district] or list(config.districts)
            last = end if end is not None else int(time.time())
            first = start if start is not None else _first_hour(store, chosen, last)
            n = export.write(out, fmt, export.BALANCE_COLUMNS,
                             export.balance_rows(store, chosen, first, last))
    except export.ExportError as exc:
        raise KnuteError(str(exc)) from None
    except _store_errors() as exc:
        raise KnuteError(f"store {_where(config)}: {exc}") from None
    print(f"{out}: {n} rows ({args.what}, {fmt})")
    return 0


def _first_hour(store: Any, districts: list[Any], last: int) -> int:
    """The first hour any inlet meter of ``districts`` has (``last`` if none)."""
    inlets = [d for district in districts for d in district.inflow]
    firsts = [hours[0].start for d in inlets if (hours := store.hours(d))]
    return min(firsts, default=last)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``knute backend ACTION``."""
    config = _load(args.config)
    if args.backend_command == "run":
        # Only the service loads MQTT, the reading schema's validator and the web page.
        from knute.backend import service
        from knute.backend.config import ConfigError

        try:
            return service.run(config)
        except ConfigError as exc:      # the web page's address cannot be had
            raise KnuteError(str(exc)) from None
        except _store_errors() as exc:
            raise KnuteError(f"store {_where(config)}: {exc}") from None
    store = _open(config)
    if args.backend_command == "export":
        try:
            return _export(args, config, store)
        finally:
            store.close()
    if args.backend_command == "retention":
        try:
            import time

            done = store.apply_retention(time.time(), config.retention())
        except _store_errors() as exc:
            raise KnuteError(f"store {_where(config)}: {exc}") from None
        finally:
            store.close()
        print(json.dumps(done, sort_keys=True) if args.json else
              " ".join(f"{k}={v}" for k, v in sorted(done.items())))
        return 0
    try:
        report: dict[str, Any] = {
            "store": _where(config), "readings": store.count_readings(),
            "meters": len(store.last_heard()), "counters": store.counters(),
            "unheard_district_meters": sorted(
                {d for district in config.districts
                 for d in (*district.inflow, *district.outflow, *district.households)}
                - set(store.last_heard())),
            "open_alerts": [{k: v for k, v in a.items() if k != "_state"}
                            for a in store.alerts("open")]}
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"store {report['store']}: {report['readings']} readings from "
          f"{report['meters']} meters")
    for name, value in sorted(report["counters"].items()):
        print(f"  {name:12} {value}")
    if report["unheard_district_meters"]:
        print("district meters never heard: " + " ".join(report["unheard_district_meters"]))
    print(f"open alerts: {len(report['open_alerts'])}")
    for alert in report["open_alerts"]:
        print(f"  {alert['alert']:16} {alert['subject']:10} since {alert['opened_at']} "
              f"value {alert['value']:g} {alert['unit']}")
    return 0

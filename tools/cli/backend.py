"""``knute backend``: the city's side of the broker (docs/water.md).

    knute backend run --config FILE       consume readings, store them, raise alerts
    knute backend status --config FILE [--json]
                                          counters, meters and open alerts from the store

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
                                         "reading once, rebuild hourly series and publish "
                                         "alerts retained on <prefix>/alert/...")
    run_cmd.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    status = sub.add_parser("status", help="counters, meters and open alerts from the store")
    status.add_argument("--config", required=True, help="backend TOML file (docs/water.md)")
    status.add_argument("--json", action="store_true", help="print JSON")


def _load(path: str) -> Any:
    from knute.backend.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        raise KnuteError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Dispatch ``knute backend ACTION``."""
    import sqlite3

    from knute.backend import service
    from knute.backend.store import Store, StoreError

    config = _load(args.config)
    try:
        if args.backend_command == "run":
            return service.run(config)
        if not config.store_path.exists():
            raise KnuteError(f"store {config.store_path}: no such file (has the backend run?)")
        store = Store(config.store_path)
    except (StoreError, OSError, sqlite3.Error) as exc:
        raise KnuteError(f"store {config.store_path}: {exc}") from None
    try:
        report: dict[str, Any] = {
            "store": str(config.store_path), "readings": store.count_readings(),
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

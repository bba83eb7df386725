"""``knute bench web``: what one load of the backend's web page costs, against a baseline.

A store is filled directly (no MQTT, no ingest: ``knute bench backend`` measures
those) with one district of ``--meters`` household meters and an inlet meter,
``--days`` days of hourly values each. Figures, side by side in one run:

- the district's document (``/api/districts/<name>``: daily balances and the
  night-flow trend) as the page builds it: from the district rollup kept at
  ingest (``SqlStore.district_totals``), and before the rollup exists, when
  the store sums the households' hours per hour in one query
  (``Store.household_totals``); and the time to build the rollup from the
  hours (``SqlStore.set_districts``, once);
- the same balances hour by hour with ``analytics.district_balance``, every
  meter's hours read into Python (what the page did first);
- the baseline: the bare SQL sum of the same hours per hour;
- the whole page (``/``: the district, the open alerts, one meter, silent
  meters) and one meter's document (``/api/meters/<device>``), with their sizes.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError

HOUR_S = 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the web benchmark."""
    parser.add_argument("--meters", type=int, default=5_000,
                        help="household meters in the district (default 5000)")
    parser.add_argument("--days", type=int, default=14, help="days shown (default 14)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _fill(store: Any, meters: list[str], inlet: str, start: int, days: int,
          rng: random.Random) -> None:
    """Hourly values for every meter and the inlet (their sum plus a leak), one reading each."""
    hours = range(start, start + days * 24 * HOUR_S, HOUR_S)
    inlet_l = dict.fromkeys(hours, 40.0)
    db = store.db           # the SQLite connection: rows straight into the tables
    with store.transaction():
        for device in meters:
            rows = []
            for hour in hours:
                litres = float(rng.choice((0, 0, 0, 2, 5, 9, 14)))
                inlet_l[hour] += litres
                rows.append((device, hour, litres, "measured"))
            db.executemany("INSERT INTO hours VALUES (?,?,?,?)", rows)
        db.executemany("INSERT INTO hours VALUES (?,?,?,?)",
                       [(inlet, h, v, "measured") for h, v in inlet_l.items()])
        end = start + days * 24 * HOUR_S
        db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)",
                       [(f"{d}:1", d, "water_meter", 1, end + 0.25, None, "[]", "[]", "{}")
                        for d in [*meters, inlet]])


def _timed(call: Any, repeat: int = 3) -> tuple[float, Any]:
    """The best of ``repeat`` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(args: argparse.Namespace) -> int:
    """Fill a store, time the page's documents and the SQL baseline, print the figures."""
    from knute.backend.config import Config, District
    from knute.backend.service import district_balances
    from knute.backend.store_sqlite import Store
    from knute.backend.web import WebApp

    if args.meters < 1 or not 1 <= args.days <= 366:
        raise KnuteError("--meters must be at least 1 and --days 1-366")
    rng = random.Random(args.seed)
    meters = [f"{0x20000000 + i:08x}" for i in range(args.meters)]
    inlet = "1000a001"
    start = 1_767_222_000            # 2025-12-31 23:00 UTC: local midnight in Oslo
    end = start + args.days * 24 * HOUR_S
    with tempfile.TemporaryDirectory(prefix="knute-bench-web-") as tmp:
        path = Path(tmp) / "b.sqlite"
        config = Config(path=Path(tmp) / "backend.toml", store_path=path, web_days=args.days,
                        districts=(District("bench", (inlet,), (), tuple(meters),
                                            len(meters)),))
        store = Store(path)
        t0 = time.perf_counter()
        _fill(store, meters, inlet, start, args.days, rng)
        fill_s = time.perf_counter() - t0
        app = WebApp(config, Store(path), clock=lambda: float(end + 60))
        t_summed, (status, _, summed) = _timed(lambda: app.answer("/api/districts/bench"))
        t0 = time.perf_counter()
        store.set_districts({"bench": meters})
        rollup_s = time.perf_counter() - t0
        t_district, (status, _, body) = _timed(lambda: app.answer("/api/districts/bench"))
        if status != 200:
            raise KnuteError(f"/api/districts/bench answered {status}: {body[:200]!r}")
        if body != summed:
            raise KnuteError("the district document from the rollup differs from the summed one")
        district = json.loads(body)
        marks = ",".join("?" * len(meters))

        def baseline() -> list[Any]:
            return list(store.db.execute(
                f"SELECT hour, sum(litres), count(*) FROM hours WHERE device IN ({marks}) "
                "AND hour>=? AND hour<? GROUP BY hour ORDER BY hour", (*meters, start, end)))

        t_sql, rows = _timed(baseline)
        t_rule, _ = _timed(lambda: district_balances(store, config.districts[0], start, end),
                           repeat=1)
        households = sum(float(r[1]) for r in rows)
        shown = sum(float(d["households_l"]) for d in district["days"])
        if abs(households - shown) > 1e-6 * max(1.0, households):
            raise KnuteError(f"the page's households ({shown}) differ from SQL's ({households})")
        t_page, (_, _, page) = _timed(lambda: app.answer("/"), repeat=1)
        t_meter, (_, _, meter) = _timed(lambda: app.answer(f"/api/meters/{meters[0]}"))
        store.close()
        app.store.close()
        db_bytes = path.stat().st_size
    out: dict[str, Any] = {
        "meters": args.meters, "days": args.days, "hourly_values": (args.meters + 1)
        * args.days * 24, "fill_s": round(fill_s, 2), "store_bytes": db_bytes,
        "district_document_s": round(t_district, 6),
        "district_document_summed_s": round(t_summed, 6),
        "rollup_build_s": round(rollup_s, 3),
        "hour_by_hour_rule_s": round(t_rule, 6),
        "baseline_sql_sum_s": round(t_sql, 6),
        "district_vs_baseline": round(t_district / t_sql, 1) if t_sql else None,
        "page_s": round(t_page, 6), "page_bytes": len(page),
        "meter_document_s": round(t_meter, 6), "meter_document_bytes": len(meter),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"district of {args.meters} meters x {args.days} days "
          f"({out['hourly_values']:,} hourly values, store {db_bytes / 1e6:.1f} MB)")
    print(f"  district document, rollup        {t_district:8.3f} s")
    print(f"  the same, households summed      {t_summed:8.3f} s")
    print(f"  rollup built from hours (once)   {rollup_s:8.3f} s")
    print(f"  hour by hour, meters in Python   {t_rule:8.3f} s")
    print(f"  baseline: one SQL sum per hour   {t_sql:8.3f} s   "
          f"({out['district_vs_baseline']}x)")
    print(f"  whole page                       {t_page:8.3f} s   {len(page):,} bytes")
    print(f"  one meter's document             {t_meter:8.4f} s   {len(meter):,} bytes")
    return 0

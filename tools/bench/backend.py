"""``knute bench backend``: the backend's stores, SQLite and PostgreSQL, side by side.

Figures, for each store in one run (PostgreSQL is a throwaway cluster from
``tools.rig.postgres``; ``--stores sqlite`` leaves it out):

- ingest: ``--readings`` water-meter readings (6-hour profiles) published to a
  real Mosquitto and consumed by ``knute backend run`` (schema check, store,
  incremental series, alerts), in readings per second from the first publish
  to the last commit; beside it ``Store.add_reading`` called in a loop (the
  store's share; on PostgreSQL also with every statement sent at once,
  ``PgStore(batch=False)``, the store before its writes were batched) and a
  bare loop of one ``INSERT`` of the same rows per transaction into the same
  kind of store (the database's floor);
- storage: bytes per hourly value of the ``hours`` table with its index, after
  loading the data below;
- the daily balance of one district of ``--district-meters`` (5,000) meters
  over ``--days`` (30) days of hourly data (``backend.queries.daily_balances``),
  from the district rollup and, beside it, summing the households' hours in
  SQL (the bare query, what the balance did before the rollup), with the time
  to build the rollup from the hours (``SqlStore.set_districts``);
- the night-flow pass of the whole city (``--city-meters``, 45,000) for one
  night: one aggregate query (``backend.queries.night_flows``) against the
  per-meter rule (``analytics.nights`` over each meter's hours, read one meter
  at a time).

The hourly data for the last three figures are loaded in bulk (executemany,
COPY), not through ingest: ingest is measured on its own above.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from knute.gateway.errors import KnuteError

HOUR_S = 3600
T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
TZ = "Europe/Oslo"
STORES = ("sqlite", "postgres")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the backend benchmark."""
    parser.add_argument("--stores", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (default both)")
    parser.add_argument("--readings", type=int, default=2_000,
                        help="readings ingested through MQTT (default 2000)")
    parser.add_argument("--ingest-meters", type=int, default=200,
                        help="meters those readings come from (default 200)")
    parser.add_argument("--district-meters", type=int, default=5_000,
                        help="meters of the balanced district (default 5000)")
    parser.add_argument("--days", type=int, default=30, help="days balanced (default 30)")
    parser.add_argument("--city-meters", type=int, default=45_000,
                        help="meters of the night-flow pass (default 45000)")
    parser.add_argument("--seed", type=int, default=15, help="random seed (default 15)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _utc(t: float, millis: bool = True) -> str:
    text = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return (text[:-3] if millis else text[:-7]) + "Z"


def readings(count: int, meters: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` schema-valid readings: each meter sends every 6 hours a 6-slot profile."""
    index = {m: rng.randrange(10_000, 900_000) for m in range(meters)}
    out = []
    for n in range(count):
        m, k = n % meters, n // meters
        end = T0 + (k + 1) * 6 * HOUR_S
        litres = [rng.randrange(0, 60) for _ in range(6)]
        index[m] += sum(litres)
        device = f"{0x00100000 + m:08x}"
        out.append({
            "id": f"{device}:{k + 1}", "device": device, "kind": "water_meter",
            "fcnt": k + 1, "received_at": _utc(end + 0.4),
            "readings": {"index": {"value": index[m], "unit": "L"}}, "alarms": [],
            "battery": 90, "gateway": "gw-bench", "source": "radio",
            "receivers": [{"source": "lora0", "rssi_dbm": -100}],
            "profile": [{"start": _utc(end - (6 - i) * HOUR_S, False),
                         "end": _utc(end - (5 - i) * HOUR_S, False), "litres": v}
                        for i, v in enumerate(litres)]})
    return out


class _Stores:
    """Opens fresh stores of one kind (a new SQLite file or PostgreSQL database each time)."""

    def __init__(self, kind: str, workdir: Path, cluster: Any) -> None:
        self.kind = kind
        self.workdir = workdir
        self.cluster = cluster
        self.n = 0

    def new(self, batch: bool = True) -> tuple[Any, str]:
        """(store, the value of [store] path or url); ``batch``: PostgreSQL's batched writes."""
        from knute.backend.store_sqlite import Store

        self.n += 1
        if self.kind == "sqlite":
            where = str(self.workdir / f"{self.kind}{self.n}.sqlite")
            return Store(where), where
        from knute.backend.store_pg import PgStore

        where = self.cluster.create_database(f"bench{self.n}")
        return PgStore(where, batch=batch), where


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _bare_rows(docs: list[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    from knute.backend.hours import meter_reading

    for doc in docs:
        r = meter_reading(doc)
        yield (doc["id"], doc["device"], doc["kind"], doc["fcnt"], r.received_at, r.index_l,
               json.dumps([[s.start, s.litres] for s in r.slots]), "[]", json.dumps(doc))


def bench_ingest(stores: _Stores, docs: list[dict[str, Any]], broker: Any) -> dict[str, Any]:
    """Readings/s through MQTT and the consumer, through add_reading, and bare inserts."""
    # Bare: one INSERT of the same row per transaction.
    bare, _ = stores.new()
    rows = list(_bare_rows(docs))
    start = time.perf_counter()
    for row in rows:
        with bare.transaction():
            bare._x("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)", row)
    bare_s = time.perf_counter() - start
    bare.close()
    # The store's own path, in process; on PostgreSQL also unbatched (a round trip
    # per statement).
    direct, _ = stores.new()
    start = time.perf_counter()
    for doc in docs:
        direct.add_reading(doc)
    direct_s = time.perf_counter() - start
    direct.close()
    unbatched_s = direct_s
    if stores.kind == "postgres":
        one_by_one, _ = stores.new(batch=False)
        start = time.perf_counter()
        for doc in docs:
            one_by_one.add_reading(doc)
        unbatched_s = time.perf_counter() - start
        one_by_one.close()
    # Through the broker and `knute backend run`.
    store, where = stores.new()
    mqtt_s = _through_mqtt(stores.workdir, store, where, docs, broker)
    counters = store.counters()
    store.close()
    return {"readings": len(docs),
            "mqtt_consumer_per_s": _rate(len(docs), mqtt_s),
            "add_reading_per_s": _rate(len(docs), direct_s),
            "add_reading_unbatched_per_s": _rate(len(docs), unbatched_s),
            "bare_insert_per_s": _rate(len(docs), bare_s),
            "stored": counters.get("stored", 0)}


def _through_mqtt(workdir: Path, store: Any, where: str, docs: list[dict[str, Any]],
                  broker: Any) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from knute.tools.rig.wait import wait_for

    key = "url" if where.startswith("postgresql://") else "path"
    config = workdir / f"backend-{store.kind}.toml"
    config.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                      f'client_id = "bench-{store.kind}"\n[store]\n{key} = "{where}"\n'
                      '[water]\nevaluate_every_s = 3600\n'
                      # Ingest is measured, not the page: no fixed port to collide on when
                      # two benches (or a backend already serving 8080) run on one machine.
                      '[web]\nenabled = false\n')
    log = workdir / f"backend-{store.kind}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "knute.tools.cli", "backend", "run",
                                 "--config", str(config)], stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        wait_for(lambda: "subscribed to" in log.read_text() or proc.poll() is not None, 60,
                 "the backend to subscribe")
        if proc.poll() is not None:
            raise KnuteError(f"knute backend run exited: {log.read_text().strip()[-300:]}")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{store.kind}")
        client.max_inflight_messages_set(100)
        client.connect(broker.host, broker.port)
        client.loop_start()
        payloads = [(f"knute/water_meter/{d['device']}/up", json.dumps(d)) for d in docs]
        start = time.perf_counter()
        infos = [client.publish(t, p, qos=1) for t, p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        wait_for(lambda: store.count_readings() >= len(docs), 600, "every reading stored")
        elapsed = time.perf_counter() - start
        client.loop_stop()
        client.disconnect()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(30)


def _load_hours(store: Any, rows: Iterator[tuple[str, int, float, str]]) -> int:
    """Bulk-load hourly values (executemany on SQLite, COPY on PostgreSQL)."""
    n = 0
    if store.kind == "sqlite":
        with store.transaction():
            batch: list[tuple[str, int, float, str]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= 50_000:
                    store._xm("INSERT INTO hours VALUES (?,?,?,?)", batch)
                    n += len(batch)
                    batch.clear()
            store._xm("INSERT INTO hours VALUES (?,?,?,?)", batch)
            n += len(batch)
        return n
    with store.db.cursor() as cursor, cursor.copy(
            "COPY hours (device, hour, litres, quality) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    store.db.execute("VACUUM ANALYZE hours")
    return n


def _district_rows(meters: int, days: int, first: int,
                   rng: random.Random) -> Iterator[tuple[str, int, float, str]]:
    for m in range(meters):
        device = f"{0x00200000 + m:08x}"
        for h in range(days * 24):
            yield device, first + h * HOUR_S, float(rng.randrange(0, 40)), "measured"
    for h in range(days * 24):
        yield "1000a001", first + h * HOUR_S, float(meters * 25), "measured"


def _night_rows(meters: int, day_start: int, district: int,
                rng: random.Random) -> Iterator[tuple[str, int, float, str]]:
    # The district's meters already have these hours; the rest of the city gets a day.
    for m in range(district, meters):
        device = f"{0x00200000 + m:08x}"
        for h in range(24):
            yield device, day_start + h * HOUR_S, float(rng.randrange(0, 40)), "measured"


def _timed(what: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = what()
    return time.perf_counter() - start, value


def bench_queries(stores: _Stores, args: argparse.Namespace,
                  rng: random.Random) -> dict[str, Any]:
    """Storage per hourly value, the district's daily balance, the city's night pass."""
    from knute.backend import analytics, queries
    from knute.backend.config import District

    tz = ZoneInfo(TZ)
    store, _ = stores.new()
    first_day = date(2026, 1, 5)
    first = int(datetime(2026, 1, 5, tzinfo=tz).timestamp())
    load_s, n = _timed(lambda: _load_hours(store, _district_rows(
        args.district_meters, args.days, first, rng)))
    night = date(2026, 1, 5 + args.days // 2)
    night_day = int(datetime(night.year, night.month, night.day, tzinfo=tz).timestamp())
    extra_s, extra = _timed(lambda: _load_hours(store, _night_rows(
        args.city_meters, night_day, args.district_meters, rng)))
    n += extra
    size = store.size_bytes("hours")
    homes = tuple(f"{0x00200000 + m:08x}" for m in range(args.district_meters))
    district = District("bench", ("1000a001",), (), homes, len(homes))
    bare_s, bare = _timed(lambda: queries.daily_balances(store, district, first_day,
                                                         args.days, tz))
    rollup_s, _ = _timed(lambda: store.set_districts({district.name: homes}))
    balance_s, days = _timed(lambda: queries.daily_balances(store, district, first_day,
                                                            args.days, tz))
    if len(days) != args.days or days[1].hours != 24 or days[1].missing:
        raise KnuteError(f"daily balance of {store.kind} came out wrong: {days[1]}")
    if days != bare:
        raise KnuteError(f"daily balance of {store.kind} from the rollup differs from SQL's")
    pass_s, flows = _timed(lambda: queries.night_flows(store, night, tz))
    devices = [f"{0x00200000 + m:08x}" for m in range(args.city_meters)]
    start, end, _ = queries.night_window(night, tz)

    def per_meter() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for device in devices:
            for n_ in analytics.nights(store.hours(device, start, end), tz):
                out[device] = n_.min_l_h
        return out

    baseline_s, expected = _timed(per_meter)
    if {d: flows.get(d) for d in devices} != expected:
        raise KnuteError(f"night-flow pass of {store.kind} differs from the per-meter rule")
    store.close()
    return {"hourly_values": n, "load_s": round(load_s + extra_s, 2),
            "bytes_per_hourly_value": round(size / n, 1),
            "district_daily_balance_s": round(balance_s, 4),
            "district_daily_balance_bare_s": round(bare_s, 3),
            "district_rollup_build_s": round(rollup_s, 2),
            "district_meters": args.district_meters, "days": args.days,
            "city_night_pass_s": round(pass_s, 3), "city_meters": len(flows),
            "city_night_per_meter_s": round(baseline_s, 3)}


def run(args: argparse.Namespace) -> int:
    """Run every figure on every store asked for; print them side by side."""
    from knute.tools.rig.broker import Broker

    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not kinds or any(k not in STORES for k in kinds):
        raise KnuteError(f"--stores: expected a comma-separated list of {', '.join(STORES)}, "
                         f"got {args.stores!r}")
    if min(args.readings, args.ingest_meters, args.district_meters, args.days) < 1 or (
            args.city_meters < args.district_meters or args.days < 3):
        raise KnuteError("--readings, --ingest-meters, --district-meters must be at least 1, "
                         "--days at least 3, --city-meters at least --district-meters")
    rng = random.Random(args.seed)
    docs = readings(args.readings, args.ingest_meters, rng)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="knute-bench-backend-") as tmp:
        workdir = Path(tmp)
        cluster = None
        (workdir / "broker").mkdir()
        broker = Broker(workdir / "broker", "mosquitto",
                        extra_config="max_queued_messages 1000000\n")
        broker.start()
        try:
            if "postgres" in kinds:
                from knute.tools.rig.postgres import PostgresCluster

                cluster = PostgresCluster().start()
            for kind in kinds:
                stores = _Stores(kind, workdir, cluster)
                results[kind] = {"ingest": bench_ingest(stores, docs, broker),
                                 **bench_queries(stores, args, random.Random(args.seed))}
        finally:
            broker.stop()
            if cluster is not None:
                cluster.stop()
    if args.json:
        print(json.dumps(results))
        return 0
    _print(results)
    return 0


def _print(results: dict[str, Any]) -> None:
    kinds = list(results)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("ingest via MQTT + knute backend run, readings/s",
         lambda r: r["ingest"]["mqtt_consumer_per_s"]),
        ("  Store.add_reading loop, readings/s", lambda r: r["ingest"]["add_reading_per_s"]),
        ("    the same, a round trip per statement",
         lambda r: r["ingest"]["add_reading_unbatched_per_s"]),
        ("  bare INSERT per transaction, readings/s",
         lambda r: r["ingest"]["bare_insert_per_s"]),
        ("storage, bytes per hourly value", lambda r: r["bytes_per_hourly_value"]),
        ("daily balance, district x days, rollup, s", lambda r: r["district_daily_balance_s"]),
        ("  bare SQL sum of the households' hours, s",
         lambda r: r["district_daily_balance_bare_s"]),
        ("  rollup built from the hours (once), s", lambda r: r["district_rollup_build_s"]),
        ("night-flow pass, one query, s", lambda r: r["city_night_pass_s"]),
        ("  per-meter rule, meter by meter, s", lambda r: r["city_night_per_meter_s"]),
    ]
    first = results[kinds[0]]
    print(f"knute bench backend: {first['ingest']['readings']} readings ingested; "
          f"{first['district_meters']} meters x {first['days']} days balanced; "
          f"{first['city_meters']} meters in the night pass")
    print(f"{'':52}" + "".join(f"{k:>12}" for k in kinds))
    for label, get in rows:
        print(f"{label:52}" + "".join(f"{get(results[k]):>12}" for k in kinds))

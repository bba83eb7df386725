"""``knute bench air``: what the air index costs the backend's consumer and its page.

The simulated episode (tools/sim/air_episode.py) for ``--stations`` stations
in one area over ``--hours`` hours goes through the backend's core
(``Backend.handle``: check, store, QC, index, publish) on an SQLite store,
side by side with the baseline of the same readings checked and stored with
no air index (``[air]`` areas empty and the index turned off). Figures:
readings per second both ways, the index's share of the time, the time of
one hour's close (station and area recomputed from the store), and of the
``/api/air`` page's overview and of one station's 48-hour chart.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the air benchmark."""
    parser.add_argument("--stations", type=int, default=10, help="stations in the area (10)")
    parser.add_argument("--hours", type=int, default=26, help="simulated hours (26)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _ingest(folder: Path, stations: tuple[str, ...], hours: int, with_index: bool
            ) -> tuple[float, int, int]:
    from knute.backend.config import AirArea, Config
    from knute.backend.service import Backend
    from knute.backend.store_sqlite import Store
    from knute.tools.sim.air_episode import episode

    config = Config(path=folder / "b.toml", store_path=folder / f"b-{with_index}.sqlite",
                    air_areas=(AirArea("bench", stations),) if with_index else ())
    store = Store(config.store_path)
    published: list[str] = []
    backend = Backend(config, store, lambda topic, doc: published.append(topic))
    if not with_index:
        backend.air.handle = lambda doc: None       # type: ignore[method-assign]
    payloads = [(t, json.dumps(d).encode())
                for t, d in episode(stations, hours, 1_767_571_200, stuck=stations[-1:])]
    start = time.perf_counter()
    for topic, payload in payloads:
        backend.handle(topic, payload)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed, len(payloads), len(published)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    from knute.backend.config import AirArea, Config
    from knute.backend.store_sqlite import Store
    from knute.backend.web import WebApp

    stations = tuple(f"{0x2000 + i:08x}" for i in range(args.stations))
    with tempfile.TemporaryDirectory(prefix="knute-bench-air-") as tmp:
        folder = Path(tmp)
        bare_s, readings, _ = _ingest(folder, stations, args.hours, False)
        index_s, _, published = _ingest(folder, stations, args.hours, True)
        config = Config(path=folder / "b.toml", store_path=folder / "b-True.sqlite",
                        air_areas=(AirArea("bench", stations),))
        store = Store(config.store_path)
        app = WebApp(config, store)
        from knute.backend.air_service import AirIndexes

        indexes = AirIndexes(config, store)
        last_hour = 1_767_571_200 + (args.hours - 2) * 3600
        start = time.perf_counter()
        indexes.area(config.air_areas[0], last_hour)
        area_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        app.answer("/api/air")
        overview_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        app.answer(f"/api/air/{stations[0]}")
        chart_ms = (time.perf_counter() - start) * 1000
        store.close()
    figures: dict[str, Any] = {
        "stations": args.stations, "hours": args.hours, "readings": readings,
        "index_messages": published,
        "readings_per_s": round(readings / index_s, 1),
        "baseline_readings_per_s": round(readings / bare_s, 1),
        "index_share": round(max(index_s - bare_s, 0.0) / index_s, 3),
        "area_close_ms": round(area_ms, 1), "overview_ms": round(overview_ms, 1),
        "chart_48h_ms": round(chart_ms, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"air index: {args.stations} stations, {args.hours} h, {readings} readings, "
          f"{published} index messages")
    print(f"  ingest with index   {figures['readings_per_s']:>10} readings/s")
    print(f"  ingest without      {figures['baseline_readings_per_s']:>10} readings/s "
          f"(baseline: check and store only)")
    print(f"  index share         {figures['index_share'] * 100:>9.1f} %")
    print(f"  one area's hour     {figures['area_close_ms']:>9.1f} ms "
          f"({args.stations} stations from the store)")
    print(f"  /api/air            {figures['overview_ms']:>9.1f} ms")
    print(f"  /api/air/<device>   {figures['chart_48h_ms']:>9.1f} ms (48 hours)")
    return 0

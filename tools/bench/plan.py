"""``knute bench plan``: how fast ``knute plan`` simulates a city, against a baseline.

Figures, side by side in one run:
- the city of the issue: ``--nodes`` (45,000) water meters x ``--hours`` (24) with
  ``--gateways`` (8) concentrators; simulated uplinks per second of wall time, whole
  run (placement, link budgets, traffic, collisions, figures);
- the baseline: the same simulator with the pairwise O(n^2) overlap search
  (``find_overlaps_pairwise``) on a smaller city (``--baseline-nodes``), and the
  sweep on that same city, which must decode exactly the same frames.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from knute.gateway.errors import KnuteError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the plan benchmark."""
    parser.add_argument("--nodes", type=int, default=45_000, help="city size (default 45000)")
    parser.add_argument("--gateways", type=int, default=8, help="concentrators (default 8)")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated time (default 24)")
    parser.add_argument("--baseline-nodes", type=int, default=1_000,
                        help="city size of the pairwise baseline (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _timed(cfg: Any, finder: Any) -> tuple[float, Any]:
    from knute.tools.sim.radio_plan import simulate

    start = time.perf_counter()
    result = simulate(cfg, finder)
    return time.perf_counter() - start, result


def run(args: argparse.Namespace) -> int:
    """Run both simulations and print the figures."""
    from knute.tools.sim.radio import PlanConfig, find_overlaps, find_overlaps_pairwise

    if args.nodes < 1 or args.baseline_nodes < 1 or args.gateways < 1:
        raise KnuteError("--nodes, --baseline-nodes and --gateways must be at least 1")
    city = PlanConfig(nodes=args.nodes, gateways=args.gateways, duration_s=args.hours * 3600,
                      frame_bytes=31)
    t_city, r_city = _timed(city, find_overlaps)
    small = PlanConfig(nodes=args.baseline_nodes, gateways=1, radius_km=2.0,
                       duration_s=args.hours * 3600, frame_bytes=31)
    t_pair, r_pair = _timed(small, find_overlaps_pairwise)
    t_sweep, r_sweep = _timed(small, find_overlaps)
    if r_pair.ok != r_sweep.ok:
        raise KnuteError("the sweep and the pairwise search decoded different frames")
    uplinks = r_city.summary["uplinks"]
    out: dict[str, Any] = {
        "nodes": args.nodes,
        "gateways": args.gateways,
        "hours": args.hours,
        "uplinks": uplinks,
        "seconds": round(t_city, 3),
        "sim_uplinks_per_s": round(uplinks / t_city),
        "delivery_ratio": r_city.summary["delivery_ratio"],
        "baseline": {
            "name": "pairwise O(n^2) overlap search",
            "nodes": args.baseline_nodes,
            "uplinks": r_pair.summary["uplinks"],
            "seconds": round(t_pair, 3),
            "sim_uplinks_per_s": round(r_pair.summary["uplinks"] / t_pair),
            "sweep_seconds_same_city": round(t_sweep, 3),
            "sweep_uplinks_per_s_same_city": round(r_sweep.summary["uplinks"] / t_sweep),
            "same_frames_decoded": True,
        },
    }
    if args.json:
        print(json.dumps(out))
        return 0
    base = out["baseline"]
    print(f"knute plan, {args.nodes} nodes x {args.hours:g} h, {args.gateways} concentrators: "
          f"{uplinks} uplinks in {t_city:.2f} s = {out['sim_uplinks_per_s']} uplinks/s "
          f"(delivery {out['delivery_ratio'] * 100:.2f} %)")
    print(f"baseline, {args.baseline_nodes} nodes, pairwise overlaps: {base['uplinks']} uplinks "
          f"in {t_pair:.2f} s = {base['sim_uplinks_per_s']} uplinks/s; the sweep on the same "
          f"city: {t_sweep:.2f} s = {base['sweep_uplinks_per_s_same_city']} uplinks/s, "
          "same frames decoded")
    return 0

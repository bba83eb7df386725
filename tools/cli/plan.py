"""``knute plan``: plan a city's concentrators with a seeded radio simulation.

The model (tools/sim/radio.py, docs/radio.md): nodes uniform in a disc of
``--radius-km`` (or ``--nodes-csv``), concentrators in a sunflower layout (or
``--gateways-csv``), Okumura-Hata urban or log-distance path loss with log-normal
shadowing, each node's SF from its link budget (or ``--sf``), channel hopping over
``--channels``, collisions with the capture effect and the inter-SF rejection of
Croce et al. 2018. ``--find-gateways`` searches the concentrator count at which
>= 99 % of frames and >= 99.9 % of hourly slots arrive.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from knute.gateway.errors import KnuteError


def _channels(text: str) -> tuple[int, ...]:
    from knute.tools.sim.radio import CHANNEL_PLAN_HZ

    text = text.strip()
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(CHANNEL_PLAN_HZ):
            raise argparse.ArgumentTypeError(
                f"a channel count must be 1..{len(CHANNEL_PLAN_HZ)}; got {n}")
        return CHANNEL_PLAN_HZ[:n]
    out = []
    for cell in text.split(","):
        try:
            out.append(round(float(cell) * 1e6))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a count or MHz values like 868.1,868.3; got {cell!r}") from None
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser, name: str = "plan") -> None:
    """Options of ``knute plan``."""
    from knute.tools.sim.radio import MODELS

    parser.add_argument("--nodes", type=int, default=45_000,
                        help="water meters, uniform in the disc (default 45000)")
    parser.add_argument("--nodes-csv", metavar="FILE",
                        help="node positions instead: x_km,y_km per line")
    parser.add_argument("--gateways", type=int, default=1,
                        help="concentrators in a sunflower layout (default 1)")
    parser.add_argument("--gateways-csv", metavar="FILE",
                        help="concentrator positions instead: x_km,y_km per line")
    parser.add_argument("--find-gateways", action="store_true",
                        help="search the fewest concentrators (from --gateways up) at which "
                        ">= 99 %% of frames and >= 99.9 %% of hourly slots arrive")
    parser.add_argument("--radius-km", type=float, default=5.0,
                        help="radius of the city (default 5)")
    parser.add_argument("--channels", type=_channels, default=None, metavar="N|MHz,...",
                        help="the first N channels of the EU868 plan, or a list in MHz "
                        "(default 8: 868.1-868.5 and 867.1-867.9)")
    parser.add_argument("--sf", type=int, choices=range(7, 13), metavar="7..12",
                        help="one spreading factor for every node (default: by link budget)")
    parser.add_argument("--capture", action=argparse.BooleanOptionalAction, default=True,
                        help="capture effect: a frame survives a co-SF overlap when it is "
                        "the stronger by the threshold (default on)")
    parser.add_argument("--capture-db", type=float, default=None,
                        help="co-SF capture threshold (default 1 dB, Croce et al. 2018)")
    parser.add_argument("--sends-per-day", type=float, default=4.0,
                        help="frames per node a day (default 4)")
    parser.add_argument("--hours", type=float, default=24.0,
                        help="simulated time (default 24)")
    parser.add_argument("--frame-bytes", type=int, default=None,
                        help="PHY payload (default: knute's typical water-meter frame)")
    parser.add_argument("--profile-len", type=int, default=12,
                        help="hourly slots each frame carries (default 12)")
    parser.add_argument("--model", choices=MODELS, default="hata",
                        help="path loss (default hata: Okumura-Hata urban)")
    parser.add_argument("--sigma-db", type=float, default=None,
                        help="log-normal shadowing (default: hata 8, log-distance 3.57)")
    parser.add_argument("--fading-db", type=float, default=0.0,
                        help="extra per-frame variation of every link, dB (default 0)")
    parser.add_argument("--margin-db", type=float, default=10.0,
                        help="installation margin of the SF choice (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--png", metavar="FILE", help="write the picture (map and load)")
    parser.add_argument("--csv-out", metavar="FILE",
                        help="write one row per node: position, SF, margin, frames")
    parser.add_argument("--json", action="store_true", help="print JSON")


def config(args: argparse.Namespace) -> Any:
    """The PlanConfig of the command line."""
    from knute.tools.sim.radio import CHANNEL_PLAN_HZ, PlanConfig
    from knute.tools.sim.radio_plan import read_xy_csv

    if args.frame_bytes is None:
        from knute.tools.cli.airtime import knute_frame_len

        frame_bytes = knute_frame_len("water_meter")
    else:
        frame_bytes = args.frame_bytes
    node_xy = read_xy_csv(args.nodes_csv, "--nodes-csv") if args.nodes_csv else None
    gw_xy = read_xy_csv(args.gateways_csv, "--gateways-csv") if args.gateways_csv else None
    if args.find_gateways and gw_xy is not None:
        raise KnuteError("--find-gateways places concentrators itself: drop --gateways-csv")
    for option, value in (("--sigma-db", args.sigma_db), ("--fading-db", args.fading_db)):
        if value is not None and not value >= 0:
            raise KnuteError(f"{option} must be zero or more; got {value:g}")
    return PlanConfig(
        nodes=len(node_xy) if node_xy is not None else args.nodes,
        gateways=len(gw_xy) if gw_xy is not None else args.gateways,
        radius_km=args.radius_km,
        channels=args.channels if args.channels is not None else CHANNEL_PLAN_HZ,
        sf=args.sf, capture=args.capture, capture_db=args.capture_db,
        sends_per_day=args.sends_per_day, seed=args.seed, frame_bytes=frame_bytes,
        duration_s=args.hours * 3600.0, model=args.model, sigma_db=args.sigma_db,
        fading_db=args.fading_db, margin_db=args.margin_db, profile_len=args.profile_len,
        node_xy=node_xy, gateway_xy=gw_xy)


def render_text(s: dict[str, Any]) -> str:
    """The plain-text report."""
    lines = [
        f"{s['nodes']} nodes, {s['gateways']} concentrator(s), radius {s['radius_km']:g} km, "
        f"{s['channels']} channel(s), {s['sends_per_day']:g} sends/day, {s['duration_h']:g} h, "
        f"seed {s['seed']}",
        f"model {s['model']} (shadowing {s['sigma_db']:g} dB), capture "
        f"{'on' if s['capture'] else 'off'}, frame {s['frame_bytes']} B"
        + (f" at SF{s['sf']} = {s['airtime_ms']:.1f} ms" if "sf" in s else ""),
        f"uplinks {s['uplinks']}, delivered {s['delivered']}: "
        f"delivery ratio {s['delivery_ratio'] * 100:.3f} %",
        f"hourly slots complete after profile overlap ({s['profile_len']} slots a frame): "
        f"{s['slot_completeness'] * 100:.3f} %",
        f"offered load G per channel {s['offered_load']:.4f} "
        f"(pure ALOHA would deliver {s['aloha_delivery'] * 100:.1f} %)",
        "per SF: " + ", ".join(
            f"SF{sf} {s['nodes_by_sf'][sf]} nodes {s['delivery_by_sf'].get(sf, 0) * 100:.2f} %"
            for sf in s["nodes_by_sf"]),
        "per channel: " + ", ".join(f"{c['freq_mhz']:.1f} MHz G={c['offered_load']:.4f}"
                                    for c in s["channel_load"]),
        f"battery years (3.6 Ah, {airtime_battery()}): min "
        f"{s['battery_years']['min']:.1f}, median {s['battery_years']['median']:.1f}",
        f"nodes below 99 % delivery: {s['nodes_below_99_percent']}; nodes needing another "
        f"concentrator (margin under {s['margin_db']:g} dB at their SF): "
        f"{s['nodes_needing_concentrator']}",
        f"target (>= 99 % frames, >= 99.9 % slots): {'met' if s['meets_target'] else 'NOT met'}",
    ]
    if "find_gateways" in s:
        found = s["find_gateways"]
        tried = "; ".join(f"{t['gateways']}: {t['delivery_ratio'] * 100:.2f} % / "
                          f"{t['slot_completeness'] * 100:.3f} %" for t in found["tried"])
        lines.append(f"concentrators needed: {found['gateways']} (tried {tried})")
    return "\n".join(lines) + "\n"


def _write_csv(path: str, result: Any) -> None:
    per = result.summary["per_node"]
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("node,x_km,y_km,sf,margin_db,sent,delivered\n")
            for n, (x, y) in enumerate(result.city.node_xy):
                fh.write(f"{n},{x:.4f},{y:.4f},{result.city.sf[n]},{per['margin_db'][n]:.1f},"
                         f"{per['sent'][n]},{per['delivered'][n]}\n")
    except OSError as exc:
        raise KnuteError(f"--csv-out {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Simulate (or search the concentrator count) and report."""
    from knute.tools.sim import radio, radio_plan

    cfg = config(args)
    started = time.perf_counter()
    found: dict[str, Any] | None = None
    if args.find_gateways:
        def progress(n: int, s: dict[str, Any]) -> None:
            if not args.json:
                print(f"  {n} concentrator(s): {s['delivery_ratio'] * 100:.3f} % frames, "
                      f"{s['slot_completeness'] * 100:.3f} % slots", file=sys.stderr)

        result, tried = radio_plan.find_gateways(cfg, progress=progress)
        if result is None:
            raise KnuteError("--find-gateways: even 256 concentrators do not meet the target")
        found = {"gateways": result.summary["gateways"], "tried": tried}
    else:
        result = radio_plan.simulate(cfg)
    s = dict(result.summary)
    s["sim_seconds"] = round(time.perf_counter() - started, 3)
    s["aloha_delivery"] = round(radio.aloha_delivery(s["offered_load"]), 6)
    s["meets_target"] = radio_plan.meets_target(s)
    if found is not None:
        s["find_gateways"] = found
    if args.png:
        from knute.tools.sim.radio_png import render

        try:
            with open(args.png, "wb") as fh:
                fh.write(render(s, result.city.node_xy, result.city.sf, cfg.radius_km))
        except OSError as exc:
            raise KnuteError(f"--png {args.png}: {exc.strerror or exc}") from None
    if args.csv_out:
        _write_csv(args.csv_out, result)
    s.pop("per_node")
    if args.json:
        print(json.dumps(s))
    else:
        sys.stdout.write(render_text(s))
    return 0


def airtime_battery() -> str:
    """The power design and currents the plan's battery years assume (tools/power.py)."""
    from knute.tools.cli import airtime

    return (f"{airtime.DESIGN}, {airtime.DEFAULT_SLEEP_UA:g} uA asleep, "
            f"{airtime.DEFAULT_TX_MA:g} mA on air")

"""One ``knute plan`` run and its figures; the concentrator search; coordinates from CSV.

The radio model itself (path loss, SF choice, traffic, collisions) is tools/sim/radio.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from knute.protocol import airtime
from knute.tools.sim.radio import (
    BW_HZ,
    DAY_S,
    HOUR_S,
    MODELS,
    SFS,
    SNR_FLOOR_DB,
    City,
    Frames,
    Overlaps,
    PlanConfig,
    build_city,
    find_overlaps,
    make_frames,
    resolve,
    time_on_air_s,
)


def _covered_slots(ranges: list[tuple[int, int]]) -> int:
    """Hour slots in the union of half-open ranges [a, b), given sorted by a."""
    total = 0
    cur_a, cur_b = None, None
    for a, b in ranges:
        if cur_b is None or cur_a is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None and cur_a is not None:
        total += cur_b - cur_a
    return total


def slot_completeness(cfg: PlanConfig, fr: Frames, ok: Sequence[bool]) -> float:
    """Share of the hourly slots the sent frames carry that some delivered frame carries.

    A frame sent at time t carries the `profile_len` whole hours before it (protocol.md,
    "profile timing"). Frames are in node order and, per node, in time order.
    """
    plen = cfg.profile_len
    sent_slots = 0
    got_slots = 0
    i, n_frames = 0, len(fr.node)
    while i < n_frames:
        n = fr.node[i]
        sent: list[tuple[int, int]] = []
        got: list[tuple[int, int]] = []
        while i < n_frames and fr.node[i] == n:
            h = int(fr.start[i] // HOUR_S)
            sent.append((h - plen, h))
            if ok[i]:
                got.append((h - plen, h))
            i += 1
        sent_slots += _covered_slots(sent)
        got_slots += _covered_slots(got)
    return got_slots / sent_slots if sent_slots else 1.0


@dataclass
class PlanResult:
    """One simulation: the city, its frames, which were decoded, and the figures."""

    cfg: PlanConfig
    city: City
    frames: Frames
    ok: list[bool]
    summary: dict[str, Any]


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def summarise(cfg: PlanConfig, city: City, fr: Frames, ok: list[bool]) -> dict[str, Any]:
    """The figures of one run, JSON-friendly (the keys of `knute plan --json`)."""
    from knute.tools.cli.airtime import Battery

    n_frames = len(fr.node)
    delivered = sum(ok)
    toa = {sf: time_on_air_s(cfg.frame_bytes, sf) for sf in SFS}
    nch = len(cfg.channels)
    busy = [[0.0] * 13 for _ in range(nch)]
    count = [0] * nch
    sent_sf = dict.fromkeys(SFS, 0)
    ok_sf = dict.fromkeys(SFS, 0)
    per_node_sent = [0] * len(city.sf)
    per_node_ok = [0] * len(city.sf)
    for f, n in enumerate(fr.node):
        sf = city.sf[n]
        ch = fr.channel[f]
        busy[ch][sf] += fr.end[f] - fr.start[f]
        count[ch] += 1
        sent_sf[sf] += 1
        per_node_sent[n] += 1
        if ok[f]:
            ok_sf[sf] += 1
            per_node_ok[n] += 1
    duration = cfg.duration_s
    channel_load = []
    for ch, hz in enumerate(cfg.channels):
        channel_load.append({
            "freq_mhz": hz / 1e6,
            "uplinks": count[ch],
            "offered_load": round(sum(busy[ch]) / duration, 6),
            "by_sf": {str(sf): round(busy[ch][sf] / duration, 6) for sf in SFS
                      if busy[ch][sf] > 0},
        })
    g_mean = sum(sum(row) for row in busy) / duration / nch
    nodes_sf = {str(sf): city.sf.count(sf) for sf in SFS if sf in city.sf}
    battery = Battery()
    years_sf = {sf: battery.life_years(toa[sf] * 1000.0, cfg.sends_per_day) for sf in SFS}
    node_years = [years_sf[sf] for sf in city.sf]
    margins = [city.best_snr[n] - SNR_FLOOR_DB[city.sf[n]] for n in range(len(city.sf))]
    needs = [n for n, m in enumerate(margins) if m < cfg.margin_db]
    low_delivery = sum(1 for n in range(len(city.sf))
                       if per_node_sent[n] and per_node_ok[n] < 0.99 * per_node_sent[n])
    out: dict[str, Any] = {
        "nodes": len(city.sf),
        "gateways": len(city.gateway_xy),
        "radius_km": cfg.radius_km,
        "channels": len(cfg.channels),
        "sends_per_day": cfg.sends_per_day,
        "duration_h": duration / HOUR_S,
        "seed": cfg.seed,
        "capture": cfg.capture,
        "model": cfg.model,
        "sigma_db": cfg.shadow_sigma(),
        "margin_db": cfg.margin_db,
        "profile_len": cfg.profile_len,
        "uplinks": n_frames,
        "delivered": delivered,
        "frame_bytes": cfg.frame_bytes,
        "airtime_ms_by_sf": {str(sf): round(toa[sf] * 1000.0, 3) for sf in SFS},
        "offered_load": round(g_mean, 6),
        "channel_load": channel_load,
        "delivery_ratio": round(delivered / n_frames, 6) if n_frames else 1.0,
        "delivery_by_sf": {str(sf): round(ok_sf[sf] / sent_sf[sf], 6) for sf in SFS
                           if sent_sf[sf]},
        "nodes_by_sf": nodes_sf,
        "slot_completeness": round(slot_completeness(cfg, fr, ok), 6),
        "battery_years": {
            "min": round(min(node_years), 2) if node_years else 0.0,
            "median": round(_median(node_years), 2),
            "by_sf": {str(sf): round(years_sf[sf], 2) for sf in SFS},
            "assumes": {"capacity_mah": battery.capacity_mah, "sleep_ua": battery.sleep_ua,
                        "tx_ma": battery.tx_ma},
        },
        "nodes_below_99_percent": low_delivery,
        "nodes_needing_concentrator": len(needs),
        "needs_concentrator_ids": needs[:1000],
        "gateway_positions_km": [[round(x, 3), round(y, 3)] for x, y in city.gateway_xy],
    }
    if cfg.sf is not None:
        out["sf"] = cfg.sf
        out["airtime_ms"] = round(toa[cfg.sf] * 1000.0, 3)
    out["per_node"] = {"sent": per_node_sent, "delivered": per_node_ok, "margin_db": margins}
    return out


def check(cfg: PlanConfig) -> None:
    """Refuse inputs the model cannot run, with the option they came from."""
    from knute.gateway.errors import KnuteError

    if cfg.node_xy is None and cfg.nodes < 1:
        raise KnuteError(f"--nodes must be at least 1; got {cfg.nodes}")
    if cfg.gateway_xy is None and cfg.gateways < 1:
        raise KnuteError(f"--gateways must be at least 1; got {cfg.gateways}")
    for option, value in (("--radius-km", cfg.radius_km), ("--sends-per-day", cfg.sends_per_day),
                          ("--hours", cfg.duration_s / HOUR_S)):
        if not math.isfinite(value) or value <= 0:
            raise KnuteError(f"{option} must be a positive number; got {value:g}")
    for option, opt_value in (("--capture-db", cfg.capture_db), ("--margin-db", cfg.margin_db),
                              ("--sigma-db", cfg.sigma_db), ("--fading-db", cfg.fading_db)):
        if opt_value is not None and not math.isfinite(opt_value):
            raise KnuteError(f"{option} must be a finite number; got {opt_value:g}")
    if not cfg.channels:
        raise KnuteError("--channels: the plan needs at least one channel")
    if cfg.sf is not None and cfg.sf not in SFS:
        raise KnuteError(f"--sf must be 7..12; got {cfg.sf}")
    if not 0 <= cfg.frame_bytes <= 255:
        raise KnuteError(f"--frame-bytes must be 0..255 (the LoRa PHY limit); "
                         f"got {cfg.frame_bytes}")
    if not 1 <= cfg.profile_len <= 24:
        raise KnuteError(f"--profile-len must be 1..24; got {cfg.profile_len}")
    if cfg.model not in MODELS:
        raise KnuteError(f"--model must be one of {', '.join(MODELS)}; got {cfg.model}")
    limits = []
    for hz in cfg.channels:
        try:
            limits.append(airtime.sub_band(hz, BW_HZ)[1])
        except ValueError as exc:
            raise KnuteError(f"--channels: {exc}") from None
    # Duty cycle: a node may put every frame of an hour into the strictest sub-band.
    slowest = max(SFS) if cfg.sf is None else cfg.sf
    per_hour = math.ceil(HOUR_S / (DAY_S / cfg.sends_per_day)) + 1
    used_ms = per_hour * time_on_air_s(cfg.frame_bytes, slowest) * 1000.0
    budget_ms = airtime.HOUR_MS * min(limits) / 10000
    if used_ms > budget_ms:
        raise KnuteError(
            f"--sends-per-day {cfg.sends_per_day:g}: up to {per_hour} frames of "
            f"{used_ms / per_hour:.0f} ms (SF{slowest}) in one hour exceed the "
            f"{min(limits) / 100:g} % duty cycle ({budget_ms:.0f} ms an hour)")


def simulate(cfg: PlanConfig,
             overlap_finder: Callable[[Frames], Overlaps] = find_overlaps) -> PlanResult:
    """Run one seeded simulation of `cfg`."""
    check(cfg)
    city = build_city(cfg)
    fr = make_frames(cfg, city)
    ok = resolve(cfg, city, fr, overlap_finder(fr))
    return PlanResult(cfg, city, fr, ok, summarise(cfg, city, fr, ok))


FRAME_TARGET = 0.99
SLOT_TARGET = 0.999


def meets_target(summary: dict[str, Any]) -> bool:
    """>= 99 % of frames and >= 99.9 % of hourly slots arrive."""
    return bool(summary["delivery_ratio"] >= FRAME_TARGET
                and summary["slot_completeness"] >= SLOT_TARGET)


def find_gateways(cfg: PlanConfig, limit: int = 256,
                  progress: Callable[[int, dict[str, Any]], None] | None = None,
                  ) -> tuple[PlanResult | None, list[dict[str, Any]]]:
    """The fewest concentrators (sunflower layout) that meet the targets.

    Doubles the count until the targets are met, then bisects between the last
    failing and the first passing count (delivery grows with the count, though not
    strictly: each count has its own layout). Returns the passing run (None if even
    `limit` fails) and every count tried.
    """
    tried: list[dict[str, Any]] = []
    runs: dict[int, PlanResult] = {}

    def attempt(n: int) -> bool:
        run = simulate(_with_gateways(cfg, n))
        runs[n] = run
        s = run.summary
        tried.append({"gateways": n, "delivery_ratio": s["delivery_ratio"],
                      "slot_completeness": s["slot_completeness"]})
        if progress is not None:
            progress(n, s)
        return meets_target(s)

    lo, hi = 0, max(1, cfg.gateways)
    while not attempt(hi):
        lo = hi
        if hi >= limit:
            return None, tried
        hi = min(hi * 2, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    tried.sort(key=lambda row: int(row["gateways"]))
    return runs[hi], tried


def _with_gateways(cfg: PlanConfig, n: int) -> PlanConfig:
    return replace(cfg, gateways=n, gateway_xy=None)


def read_xy_csv(path: str, what: str) -> list[tuple[float, float]]:
    """Coordinates in km from a CSV: `x_km,y_km` per line (a header line is allowed)."""
    from knute.gateway.errors import KnuteError

    out: list[tuple[float, float]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise KnuteError(f"{what} {path}: {exc.strerror or exc}") from None
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        cells = [c.strip() for c in text.split(",")]
        try:
            if len(cells) < 2:
                raise ValueError
            x, y = float(cells[0]), float(cells[1])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError
        except ValueError:
            if lineno == 1 and not out:
                continue            # a header
            raise KnuteError(f"{what} {path} line {lineno}: expected x_km,y_km; "
                             f"got {text[:60]!r}") from None
        out.append((x, y))
    if not out:
        raise KnuteError(f"{what} {path}: no coordinates")
    return out

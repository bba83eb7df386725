"""A seeded city radio simulator for ``knute plan`` (model and sources: docs/radio.md).

Pure functions of a :class:`PlanConfig`: nodes placed uniformly in a disc (or read
from a CSV of coordinates), concentrators at given positions, a path loss with
log-normal shadowing per link, a spreading factor per node from its link budget,
channel hopping, and collisions resolved per concentrator with the capture effect
and the inter-SF rejection thresholds of Croce et al. 2018. Every frame's time on
air comes from ``protocol.airtime`` (Semtech's formula).

The simulation is discrete-event in the plain sense: every uplink is an interval
[start, end) on a channel; the frames of each channel are swept in start order so
that each frame meets exactly the frames that overlap it (``find_overlaps``). A
pairwise reference (``find_overlaps_pairwise``, O(n^2)) gives the same answer and is
the baseline of ``knute bench plan``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import airtime

SFS = (7, 8, 9, 10, 11, 12)
BW_HZ = 125_000
DAY_S = 86_400.0
HOUR_S = 3_600.0

# Demodulation floor: the lowest SNR at which the SX1276/SX1301 demodulate a 125 kHz
# frame (SX1276 datasheet rev. 7, table 13 "Range of spreading factors").
SNR_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
# Noise at the concentrator: kTB at 290 K (-174 dBm/Hz) over 125 kHz plus a 6 dB
# noise figure (the figure the SX1276 datasheet's sensitivities imply).
NOISE_FIGURE_DB = 6.0
NOISE_DBM = -174.0 + 10 * math.log10(BW_HZ) + NOISE_FIGURE_DB

# Signal-to-interference ratio (dB) a frame of SF `row` needs over the summed power of
# the overlapping frames of SF `column` on its channel to be decoded: D. Croce,
# M. Gucciardo, S. Mangione, G. Santaromita, I. Tinnirello, "Impact of LoRa Imperfect
# Orthogonality: Analysis of Link-Level Performance", IEEE Communications Letters 22(4),
# 2018, table I (125 kHz). The diagonal is the co-SF capture threshold.
SIR_DB: dict[int, dict[int, float]] = {
    7: {7: 1, 8: -8, 9: -9, 10: -9, 11: -9, 12: -9},
    8: {7: -11, 8: 1, 9: -11, 10: -12, 11: -13, 12: -13},
    9: {7: -15, 8: -13, 9: 1, 10: -13, 11: -14, 12: -15},
    10: {7: -19, 8: -18, 9: -17, 10: 1, 11: -17, 12: -18},
    11: {7: -22, 8: -22, 9: -21, 10: -20, 11: 1, 12: -20},
    12: {7: -25, 8: -25, 9: -25, 10: -24, 11: -23, 12: 1},
}

# The 8 channels an SX1301/SX1302 concentrator listens on in EU868 practice: the three
# LoRaWAN default channels first (868.1 MHz is the one knute's nodes use today), then
# the five of the 867 MHz block. `--channels N` takes the first N.
CHANNEL_PLAN_HZ = (868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000,
                   867_500_000, 867_700_000, 867_900_000)

MODELS = ("hata", "log-distance")
# Log-distance parameters measured by Bor et al. 2016 (see docs/radio.md):
# PL(d) = PL(d0) + 10 n log10(d / d0), d0 = 40 m.
LOGDIST_D0_M = 40.0
LOGDIST_PL0_DB = 127.41
LOGDIST_N = 2.08
LOGDIST_SIGMA_DB = 3.57
# Shadowing of Okumura-Hata urban links (the usual planning figure, docs/radio.md).
HATA_SIGMA_DB = 8.0


def hata_urban_db(d_km: float, f_mhz: float = 868.0, hb_m: float = 30.0,
                  hm_m: float = 1.5) -> float:
    """Okumura-Hata median path loss, urban, small/medium city (Hata 1980).

    Valid for 150-1500 MHz, base station 30-200 m, mobile 1-10 m, 1-20 km; below
    50 m the distance is clamped (the formula is extrapolated below 1 km).
    """
    d_km = max(d_km, 0.05)
    lf = math.log10(f_mhz)
    a_hm = (1.1 * lf - 0.7) * hm_m - (1.56 * lf - 0.8)
    return (69.55 + 26.16 * lf - 13.82 * math.log10(hb_m) - a_hm
            + (44.9 - 6.55 * math.log10(hb_m)) * math.log10(d_km))


def log_distance_db(d_km: float, pl0_db: float = LOGDIST_PL0_DB, d0_m: float = LOGDIST_D0_M,
                    n: float = LOGDIST_N) -> float:
    """Log-distance median path loss: PL(d0) + 10 n log10(d / d0), d clamped to 1 m."""
    d_m = max(d_km * 1000.0, 1.0)
    return pl0_db + 10.0 * n * math.log10(d_m / d0_m)


def path_loss_db(model: str, d_km: float, gw_height_m: float = 30.0) -> float:
    """Median path loss of `model` ("hata" or "log-distance") at `d_km`."""
    if model == "hata":
        return hata_urban_db(d_km, hb_m=gw_height_m)
    return log_distance_db(d_km)


def time_on_air_s(frame_bytes: int, sf: int) -> float:
    """Time on air of one frame, in seconds (protocol.airtime, 125 kHz, CR 4/5)."""
    return float(airtime.time_on_air_ms(frame_bytes, sf, BW_HZ)) / 1000.0


def aloha_delivery(g: float) -> float:
    """Pure ALOHA's share of frames delivered at offered load `g`: e^(-2G)."""
    return math.exp(-2.0 * g)


def gateway_positions(n: int, radius_km: float) -> list[tuple[float, float]]:
    """`n` concentrators spread evenly over the disc: one in the centre, or a sunflower.

    The sunflower (Vogel's spiral) puts point i at radius R * sqrt((i + 0.5) / n) and
    angle i * 137.5 degrees, so each covers about the same area.
    """
    if n == 1:
        return [(0.0, 0.0)]
    golden = math.pi * (3.0 - math.sqrt(5.0))
    return [(radius_km * math.sqrt((i + 0.5) / n) * math.cos(i * golden),
             radius_km * math.sqrt((i + 0.5) / n) * math.sin(i * golden)) for i in range(n)]


@dataclass
class PlanConfig:
    """Every input of one simulation (defaults: a water-meter city)."""

    nodes: int = 45_000
    gateways: int = 1
    radius_km: float = 5.0
    channels: tuple[int, ...] = CHANNEL_PLAN_HZ
    sf: int | None = None                 # None: per node from its link budget
    capture: bool = True
    capture_db: float | None = None       # co-SF threshold; None: Croce's diagonal (1 dB)
    sends_per_day: float = 4.0
    seed: int = 1
    frame_bytes: int = 30
    duration_s: float = DAY_S
    model: str = "hata"
    sigma_db: float | None = None         # shadowing; None: the model's own figure
    fading_db: float = 0.0                # extra per-frame, per-concentrator variation
    tx_dbm: float = 14.0
    gw_height_m: float = 30.0
    margin_db: float = 10.0               # installation margin of the SF choice
    profile_len: int = 12                 # hourly slots each frame carries
    node_xy: list[tuple[float, float]] | None = None
    gateway_xy: list[tuple[float, float]] | None = None

    def shadow_sigma(self) -> float:
        """Standard deviation of the log-normal shadowing, dB."""
        if self.sigma_db is not None:
            return self.sigma_db
        return HATA_SIGMA_DB if self.model == "hata" else LOGDIST_SIGMA_DB


@dataclass
class City:
    """Nodes, concentrators and the links between them (no traffic yet)."""

    node_xy: list[tuple[float, float]]
    gateway_xy: list[tuple[float, float]]
    links: list[dict[int, float]]         # per node: concentrator -> mean received dBm
    best_snr: list[float]                 # per node: best mean SNR over concentrators
    sf: list[int]


@dataclass
class Frames:
    """Every uplink of the simulated period, as parallel lists."""

    node: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    channel: list[int] = field(default_factory=list)


def _uniform_disc(rng: random.Random, n: int, radius_km: float) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        r = radius_km * math.sqrt(rng.random())
        a = rng.random() * 2.0 * math.pi
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def build_city(cfg: PlanConfig) -> City:
    """Place nodes and concentrators, draw each link's shadowing, pick each node's SF."""
    rng_nodes = random.Random(f"knute-plan/{cfg.seed}/nodes")
    rng_shadow = random.Random(f"knute-plan/{cfg.seed}/shadow")
    node_xy = cfg.node_xy if cfg.node_xy is not None else _uniform_disc(
        rng_nodes, cfg.nodes, cfg.radius_km)
    gw_xy = cfg.gateway_xy if cfg.gateway_xy is not None else gateway_positions(
        cfg.gateways, cfg.radius_km)
    sigma = cfg.shadow_sigma()
    # A link weaker than this can neither be decoded nor disturb a decodable frame
    # (a co-SF interferer must come within the capture threshold of a frame that
    # is itself above the SF12 floor; several such can add up: 6 dB of slack).
    keep_dbm = NOISE_DBM + SNR_FLOOR_DB[12] - 6.0 - 3.0 * cfg.fading_db
    links: list[dict[int, float]] = []
    best: list[float] = []
    for x, y in node_xy:
        row: dict[int, float] = {}
        top = -math.inf
        for g, (gx, gy) in enumerate(gw_xy):
            d_km = math.hypot(x - gx, y - gy)
            rx = cfg.tx_dbm - path_loss_db(cfg.model, d_km, cfg.gw_height_m)
            if sigma > 0:
                rx -= rng_shadow.gauss(0.0, sigma)
            top = max(top, rx)
            if rx >= keep_dbm:
                row[g] = rx
        links.append(row)
        best.append(top - NOISE_DBM)
    if cfg.sf is not None:
        sfs = [cfg.sf] * len(node_xy)
    else:
        sfs = [choose_sf(snr, cfg.margin_db) for snr in best]
    return City(node_xy, gw_xy, links, best, sfs)


def choose_sf(best_snr_db: float, margin_db: float) -> int:
    """The fastest SF whose demodulation floor the link clears by the margin; else SF12."""
    for sf in SFS:
        if best_snr_db - SNR_FLOOR_DB[sf] >= margin_db:
            return sf
    return 12


def make_frames(cfg: PlanConfig, city: City) -> Frames:
    """Every node sends once per interval at a uniformly random time within it.

    The channel of each frame is drawn uniformly from the plan. A frame never starts
    before the same node's previous frame has ended (one radio per node).
    """
    rng = random.Random(f"knute-plan/{cfg.seed}/traffic")
    interval = DAY_S / cfg.sends_per_day
    periods = math.ceil(cfg.duration_s / interval - 1e-9)
    toa = {sf: time_on_air_s(cfg.frame_bytes, sf) for sf in SFS}
    nch = len(cfg.channels)
    fr = Frames()
    for n, sf in enumerate(city.sf):
        t_air = toa[sf]
        free_at = -math.inf
        for k in range(periods):
            t = (k + rng.random()) * interval
            ch = rng.randrange(nch)
            if t >= cfg.duration_s:
                continue
            t = max(t, free_at)
            free_at = t + t_air
            fr.node.append(n)
            fr.start.append(t)
            fr.end.append(free_at)
            fr.channel.append(ch)
    return fr


Overlaps = dict[int, list[int]]


def find_overlaps(fr: Frames) -> Overlaps:
    """Frame -> the frames overlapping it on its channel: a sweep in start order."""
    order = sorted(range(len(fr.start)), key=lambda i: (fr.channel[i], fr.start[i]))
    start, end, chan = fr.start, fr.end, fr.channel
    out: Overlaps = {}
    n = len(order)
    for pos in range(n):
        i = order[pos]
        e, c = end[i], chan[i]
        nxt = pos + 1
        while nxt < n:
            j = order[nxt]
            if chan[j] != c or start[j] >= e:
                break
            out.setdefault(i, []).append(j)
            out.setdefault(j, []).append(i)
            nxt += 1
    return out


def find_overlaps_pairwise(fr: Frames) -> Overlaps:
    """The same as :func:`find_overlaps` by comparing every pair: the O(n^2) reference."""
    out: Overlaps = {}
    start, end, chan = fr.start, fr.end, fr.channel
    n = len(start)
    for i in range(n):
        si, ei, ci = start[i], end[i], chan[i]
        for j in range(i + 1, n):
            if chan[j] == ci and start[j] < ei and si < end[j]:
                out.setdefault(i, []).append(j)
                out.setdefault(j, []).append(i)
    return out


def resolve(cfg: PlanConfig, city: City, fr: Frames, overlaps: Overlaps) -> list[bool]:
    """Whether each frame is decoded by at least one concentrator."""
    rng = random.Random(f"knute-plan/{cfg.seed}/fading")
    fading = cfg.fading_db
    fade: dict[tuple[int, int], float] = {}

    def power(frame: int, gw: int, mean: float) -> float:
        if fading <= 0:
            return mean
        key = (frame, gw)
        if key not in fade:
            fade[key] = rng.gauss(0.0, fading)
        return mean + fade[key]

    sir = {s: dict(row) for s, row in SIR_DB.items()}
    if cfg.capture_db is not None:
        for s in SFS:
            sir[s][s] = cfg.capture_db
    node, links, sfs = fr.node, city.links, city.sf
    ok = [False] * len(node)
    for f, n in enumerate(node):
        sf = sfs[n]
        floor_dbm = NOISE_DBM + SNR_FLOOR_DB[sf]
        others = overlaps.get(f)
        for gw, mean in links[n].items():
            p = power(f, gw, mean)
            if p < floor_dbm:
                continue
            if not others:
                ok[f] = True
                break
            interference: dict[int, float] = {}
            killed = False
            for o in others:
                o_mean = links[node[o]].get(gw)
                if o_mean is None:
                    continue
                o_sf = sfs[node[o]]
                if o_sf == sf and not cfg.capture:
                    killed = True
                    break
                mw = 10.0 ** (power(o, gw, o_mean) / 10.0)
                interference[o_sf] = interference.get(o_sf, 0.0) + mw
            if killed:
                continue
            row = sir[sf]
            if all(p - 10.0 * math.log10(mw) >= row[o_sf]
                   for o_sf, mw in interference.items()):
                ok[f] = True
                break
    return ok


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
    from tools.cli.airtime import Battery

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
    from gateway.errors import KnuteError

    if cfg.node_xy is None and cfg.nodes < 1:
        raise KnuteError(f"--nodes must be at least 1; got {cfg.nodes}")
    if cfg.gateway_xy is None and cfg.gateways < 1:
        raise KnuteError(f"--gateways must be at least 1; got {cfg.gateways}")
    for option, value in (("--radius-km", cfg.radius_km), ("--sends-per-day", cfg.sends_per_day),
                          ("--hours", cfg.duration_s)):
        if not math.isfinite(value) or value <= 0:
            raise KnuteError(f"{option} must be a positive number; got {value:g}")
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
    from dataclasses import replace

    return replace(cfg, gateways=n, gateway_xy=None)


def read_xy_csv(path: str, what: str) -> list[tuple[float, float]]:
    """Coordinates in km from a CSV: `x_km,y_km` per line (a header line is allowed)."""
    from gateway.errors import KnuteError

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

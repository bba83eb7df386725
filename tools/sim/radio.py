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
the baseline of ``knute bench plan``. Running a plan and its figures:
tools/sim/radio_plan.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from knute.protocol import airtime

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

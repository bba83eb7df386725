"""The city radio simulator against pure ALOHA, and its pieces against their definitions.

Validation: one channel, one SF, capture off: the delivery ratio must be within 1 %
(absolute) of e^(-2G). With n frames and delivery p the standard error of the measured
ratio is sqrt(p (1 - p) / n): at n = 60,000 and p = e^(-1) that is 0.0020 (0.0014 at
p = e^(-2)); collisions destroy frames in pairs, which at most doubles the variance, so
the error stays under 0.003, well below the 0.01 allowed. The slow variant sweeps
G = 0.1 ... 1.0 with 200,000 frames (standard error under 0.0011).
"""

from __future__ import annotations

import math
import struct
import zlib

import pytest

from knute.tools.sim import radio
from knute.tools.sim.radio import PlanConfig
from knute.tools.sim.radio_plan import simulate, slot_completeness

FRAME = 31
SF = 9


def _aloha_cfg(g: float, frames: int, capture: bool, seed: int = 7) -> PlanConfig:
    nodes = 2000
    toa = radio.time_on_air_s(FRAME, SF)
    spd = g * radio.DAY_S / (nodes * toa)
    duration = frames / (nodes * spd) * radio.DAY_S
    return PlanConfig(nodes=nodes, gateways=1, radius_km=0.5, channels=(868_100_000,),
                      sf=SF, capture=capture, sends_per_day=spd, duration_s=duration,
                      frame_bytes=FRAME, seed=seed)


@pytest.mark.parametrize("g", [0.1, 0.5, 1.0])
def test_no_capture_matches_pure_aloha(g: float) -> None:
    s = simulate(_aloha_cfg(g, 60_000, capture=False)).summary
    assert s["uplinks"] >= 59_000
    assert s["offered_load"] == pytest.approx(g, rel=0.01)
    assert abs(s["delivery_ratio"] - math.exp(-2 * g)) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("g", [round(0.1 * k, 1) for k in range(1, 11)])
def test_no_capture_matches_pure_aloha_sweep(g: float) -> None:
    s = simulate(_aloha_cfg(g, 200_000, capture=False)).summary
    assert abs(s["delivery_ratio"] - math.exp(-2 * g)) < 0.01


def test_capture_delivers_more_than_aloha() -> None:
    off = simulate(_aloha_cfg(0.5, 20_000, capture=False)).summary
    on = simulate(_aloha_cfg(0.5, 20_000, capture=True)).summary
    assert on["uplinks"] == off["uplinks"]
    assert on["delivery_ratio"] > off["delivery_ratio"] + 0.05
    assert on["delivery_ratio"] > math.exp(-1.0) + 0.05


def test_seeded_runs_repeat_and_seeds_differ() -> None:
    cfg = PlanConfig(nodes=800, gateways=2, radius_km=3.0, frame_bytes=FRAME)
    a, b = simulate(cfg), simulate(cfg)
    assert a.ok == b.ok and a.summary["delivery_ratio"] == b.summary["delivery_ratio"]
    c = simulate(PlanConfig(nodes=800, gateways=2, radius_km=3.0, frame_bytes=FRAME, seed=2))
    assert c.frames.start != a.frames.start


def test_sweep_finds_the_same_overlaps_as_the_pairwise_reference() -> None:
    # The reference is O(n^2): 3,600 frames in an hour and a half at 96 sends a day,
    # dense enough that a quarter of them overlap and some 190 overlap more than one
    # other (a day at 24 sends, 14,400 frames, cost 20 times the CPU and had a third
    # as many of those).
    cfg = PlanConfig(nodes=600, gateways=1, radius_km=2.0, channels=radio.CHANNEL_PLAN_HZ[:2],
                     sends_per_day=96, duration_s=radio.DAY_S / 16, frame_bytes=FRAME)
    city = radio.build_city(cfg)
    fr = radio.make_frames(cfg, city)
    sweep = radio.find_overlaps(fr)
    pairs = radio.find_overlaps_pairwise(fr)
    assert sweep.keys() == pairs.keys() and len(sweep) > 500
    assert sum(1 for others in sweep.values() if len(others) > 1) > 100
    assert all(sorted(sweep[k]) == sorted(pairs[k]) for k in sweep)


def test_inter_sf_rejection_follows_croce_matrix() -> None:
    # Two frames on one channel, same start: SF7 wanted at -100 dBm, an SF12
    # interferer 8 dB stronger passes (threshold -9 dB), 10 dB stronger does not.
    def pair(interferer_dbm: float) -> list[bool]:
        cfg = PlanConfig(nodes=2, gateways=1, channels=(868_100_000,), frame_bytes=FRAME)
        city = radio.City([(0.0, 0.0), (0.0, 0.0)], [(0.0, 0.0)],
                          [{0: -100.0}, {0: interferer_dbm}], [20.0, 20.0], [7, 12])
        fr = radio.Frames(node=[0, 1], start=[0.0, 0.0], end=[0.05, 1.8], channel=[0, 0])
        return radio.resolve(cfg, city, fr, radio.find_overlaps(fr))

    assert pair(-92.0)[0] is True
    assert pair(-90.0)[0] is False
    assert pair(-92.0)[1] is True          # the SF12 frame: 8 dB above SF7 (-25 dB needed)


def test_co_sf_capture_threshold() -> None:
    def pair(capture: bool, second_dbm: float) -> list[bool]:
        cfg = PlanConfig(nodes=2, gateways=1, channels=(868_100_000,), frame_bytes=FRAME,
                         capture=capture)
        city = radio.City([(0.0, 0.0), (0.0, 0.0)], [(0.0, 0.0)],
                          [{0: -100.0}, {0: second_dbm}], [20.0, 20.0], [9, 9])
        fr = radio.Frames(node=[0, 1], start=[0.0, 0.1], end=[0.25, 0.35], channel=[0, 0])
        return radio.resolve(cfg, city, fr, radio.find_overlaps(fr))

    assert pair(True, -102.0) == [True, False]     # 2 dB stronger: captured (1 dB)
    assert pair(True, -100.5) == [False, False]    # 0.5 dB: both lost
    assert pair(False, -110.0) == [False, False]   # no capture: any overlap loses both


def test_sf_from_link_budget_and_path_loss_models() -> None:
    assert radio.choose_sf(30.0, 10.0) == 7
    assert radio.choose_sf(-1.0, 10.0) == 9          # -1 - (-12.5) = 11.5 dB margin
    assert radio.choose_sf(-40.0, 10.0) == 12
    # Hata urban, 868 MHz, 30 m / 1.5 m: about 126 dB at 1 km, +35.2 dB a decade.
    assert radio.hata_urban_db(1.0) == pytest.approx(126.0, abs=0.1)
    assert radio.hata_urban_db(10.0) - radio.hata_urban_db(1.0) == pytest.approx(35.2, abs=0.1)
    assert radio.log_distance_db(0.04) == pytest.approx(127.41)


def test_slot_completeness_counts_profile_overlap() -> None:
    cfg = PlanConfig(profile_len=12, frame_bytes=FRAME)
    # One node, frames at 12:30, 18:30 and 24:30: 12 slots each, 24 distinct hours.
    fr = radio.Frames(node=[0, 0, 0], start=[45_000.0, 66_600.0, 88_200.0],
                      end=[45_000.3, 66_600.3, 88_200.3], channel=[0, 0, 0])
    assert slot_completeness(cfg, fr, [True, True, True]) == 1.0
    # The middle frame lost: its hours are carried by the last one.
    assert slot_completeness(cfg, fr, [True, False, True]) == 1.0
    # The last frame lost: hours 18..23 are lost (6 of 24).
    assert slot_completeness(cfg, fr, [True, True, False]) == pytest.approx(18 / 24)


def test_more_concentrators_deliver_more_and_flag_fewer_nodes() -> None:
    one = simulate(PlanConfig(nodes=3000, gateways=1, frame_bytes=FRAME)).summary
    many = simulate(PlanConfig(nodes=3000, gateways=8, frame_bytes=FRAME)).summary
    assert many["delivery_ratio"] > one["delivery_ratio"]
    assert many["nodes_needing_concentrator"] < one["nodes_needing_concentrator"]
    assert sum(many["nodes_by_sf"].values()) == 3000
    years = many["battery_years"]
    assert years["by_sf"]["7"] > years["by_sf"]["12"] > 0


def test_png_is_a_valid_image() -> None:
    from knute.tools.sim.radio_png import render

    r = simulate(PlanConfig(nodes=300, gateways=2, frame_bytes=FRAME))
    png = render(r.summary, r.city.node_xy, r.city.sf, 5.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    idat_len = struct.unpack(">I", png[33:37])[0]
    raw = zlib.decompress(png[41:41 + idat_len])
    assert len(raw) == height * (1 + 3 * width)
    assert len(set(raw)) > 10                       # not a blank picture

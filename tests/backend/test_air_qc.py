"""Every QC and correction rule of backend.air_qc with numbers worked by hand."""

from __future__ import annotations

import pytest

from knute.backend.air_qc import (
    AirReading,
    Qc,
    check,
    disagrees,
    from_doc,
    growth_factor,
    median,
    stuck,
)


def reading(pm25: float | None = 10.0, pm10: float | None = 20.0, rh: float | None = 50.0,
            alarms: tuple[str, ...] = (), no2: float | None = None) -> AirReading:
    values = {k: v for k, v in (("pm2_5", pm25), ("pm10", pm10), ("no2", no2))
              if v is not None}
    return AirReading("00002001", 0.0, values, rh, frozenset(alarms))


def test_growth_factor_by_hand() -> None:
    # RH 75 %: a_w = 0.75, 1/a_w - 1 = 1/3; kappa/1.65 = 0.4/1.65 = 0.242424...
    # C = 1 + 0.242424 * 3 = 1.727273
    assert growth_factor(75.0, 0.4) == pytest.approx(1.727273, abs=1e-6)
    # RH 90 %: 1/0.9 - 1 = 0.111111; C = 1 + 0.242424 / 0.111111 = 3.181818
    assert growth_factor(90.0, 0.4) == pytest.approx(3.181818, abs=1e-6)


def test_dry_air_is_not_corrected() -> None:
    c = check(reading(rh=70.0))       # the threshold itself: no correction
    assert c.values == {"pm2_5": 10.0, "pm10": 20.0} and c.factor == 1.0 and not c.notes


def test_humid_air_is_divided_by_the_growth_factor() -> None:
    # 17.272727 / 1.727273 = 10.0 and 34.545454 / 1.727273 = 20.0
    c = check(reading(pm25=17.272727, pm10=34.545454, rh=75.0))
    assert c.values["pm2_5"] == pytest.approx(10.0, abs=1e-5)
    assert c.values["pm10"] == pytest.approx(20.0, abs=1e-5)
    assert not c.notes                # C = 1.73 is below max_correction 2.0


def test_a_large_correction_marks_the_reading_humid() -> None:
    # RH 90 %: C = 3.181818 > 2.0; 31.81818 / 3.181818 = 10.0
    c = check(reading(pm25=31.81818, pm10=40.0, rh=90.0))
    assert c.values["pm2_5"] == pytest.approx(10.0, abs=1e-4)
    assert c.notes == {"humid"}


def test_fog_drops_pm() -> None:
    c = check(reading(rh=96.0, no2=30.0))
    assert c.values == {"no2": 30.0}
    assert c.dropped == {"pm2_5": "fog", "pm10": "fog"}


@pytest.mark.parametrize("bit,gone", [
    ("warmup", {"pm2_5", "pm10", "no2"}), ("pm_fault", {"pm2_5", "pm10"}),
    ("pm_bad_frames", {"pm2_5", "pm10"}), ("no2_fault", {"no2"})])
def test_status_bits_drop_what_they_concern(bit: str, gone: set[str]) -> None:
    c = check(reading(no2=30.0, alarms=(bit,)))
    assert set(c.dropped) == gone and all(r == bit for r in c.dropped.values())
    assert set(c.values) == {"pm2_5", "pm10", "no2"} - gone


def test_climate_fault_leaves_pm_uncorrected_and_says_so() -> None:
    c = check(reading(pm25=30.0, pm10=40.0, rh=90.0, alarms=("climate_fault",)))
    assert c.values == {"pm2_5": 30.0, "pm10": 40.0} and c.notes == {"no_humidity"}
    assert check(reading(rh=None)).notes == {"no_humidity"}
    assert check(reading(rh=101.0)).notes == {"no_humidity"}


@pytest.mark.parametrize("pm25,pm10,dropped", [
    (-0.1, 20.0, {"pm2_5"}), (1000.0, 1000.0, {"pm2_5", "pm10"}),
    (999.9, 999.9, set()), (21.1, 20.0, {"pm2_5", "pm10"}), (21.0, 20.0, set())])
def test_out_of_range(pm25: float, pm10: float, dropped: set[str]) -> None:
    c = check(reading(pm25=pm25, pm10=pm10))
    assert set(c.dropped) == dropped
    assert all(c.dropped[n] == "out_of_range" for n in dropped)


def test_stuck_needs_the_whole_run_flat() -> None:
    qc = Qc(stuck_readings=4)
    assert stuck([1.0, 7.0, 7.0, 7.0, 7.0], qc)
    assert not stuck([7.0, 7.0, 7.0, 7.1], qc)
    assert not stuck([7.0, 7.0, 7.0], qc)          # too few to tell
    assert stuck([7.0, 7.0, 7.05, 7.0], Qc(stuck_readings=4, stuck_range=0.1))


def test_neighbour_disagreement_by_hand() -> None:
    # others 8, 10, 12: median 10; tolerance max(10, 1.0 * 10) = 10
    assert not disagrees(20.0, [8.0, 10.0, 12.0])   # |20 - 10| = 10, not above
    assert disagrees(20.1, [8.0, 10.0, 12.0])
    # others 40, 60: upper median 60, tolerance 60: 121 is 61 away
    assert disagrees(121.0, [40.0, 60.0]) and not disagrees(120.0, [40.0, 60.0])
    assert not disagrees(500.0, [10.0])             # one neighbour cannot outvote
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0]) == 2.0


def test_from_doc_reads_the_contract() -> None:
    doc = {"device": "00002001", "alarms": ["warmup"],
           "readings": {"pm2_5": {"value": 8.7, "unit": "µg/m³"},
                        "pm10": {"value": None, "unit": "µg/m³"},
                        "humidity": {"value": 64, "unit": "%"}}}
    r = from_doc(doc, 5.0)
    assert r.values == {"pm2_5": 8.7} and r.rh == 64.0 and r.alarms == {"warmup"}

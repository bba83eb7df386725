"""The index scales, averaging and station/area rules with numbers worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.backend.air_index import (
    EAQI,
    NO,
    SCALES,
    Index,
    area_index,
    averaged,
    document,
    hourly,
    level_of,
    station_index,
    with_pm_averaging,
)
from knute.backend.air_qc import Checked

H = 3600
T0 = 1_700_000_000 - 1_700_000_000 % H + 10 * 24 * H      # an hour start
SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schema/air_index.schema.json")
                    .read_text(encoding="utf-8"))


def c(t: float, pm25: float | None = None, pm10: float | None = None,
      notes: tuple[str, ...] = (), device: str = "00002001") -> Checked:
    values = {k: v for k, v in (("pm2_5", pm25), ("pm10", pm10)) if v is not None}
    return Checked(device, t, values, notes=set(notes))


def series(values: list[float], start: int = T0, per_hour: int = 6,
           device: str = "00002001") -> list[Checked]:
    """``per_hour`` readings of each hourly value, every 600 s; a tiny ripple
    keeps the run from looking stuck while leaving the hourly mean exact."""
    out = []
    for i, v in enumerate(values):
        for k in range(per_hour):
            ripple = (0.1 if k % 2 else -0.1) if per_hour % 2 == 0 else 0.0
            out.append(c(start + i * H + k * 600, v + ripple, 2 * v, device=device))
    return out


@pytest.mark.parametrize("scale,value,level", [
    (EAQI, 0.0, 1), (EAQI, 5.0, 1), (EAQI, 5.1, 2), (EAQI, 15.0, 2), (EAQI, 50.0, 3),
    (EAQI, 50.1, 4), (EAQI, 90.1, 5), (EAQI, 140.0, 5), (EAQI, 140.1, 6),
    (NO, 30.0, 1), (NO, 30.1, 2), (NO, 50.1, 3), (NO, 150.1, 4)])
def test_pm25_bands(scale: object, value: float, level: int) -> None:
    assert scale.level("pm2_5", value) == level   # type: ignore[attr-defined]


def test_other_pollutant_bands() -> None:
    assert [EAQI.level("pm10", v) for v in (15, 16, 45, 46, 120, 121, 195, 196, 270, 271)] \
        == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert [EAQI.level("no2", v) for v in (10, 11, 25, 26, 60, 61, 100, 101, 150, 151)] \
        == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert [NO.level("pm10", v) for v in (60, 61, 120, 121, 400, 401)] == [1, 2, 2, 3, 3, 4]
    assert [NO.level("no2", v) for v in (100, 101, 200, 201, 400, 401)] == [1, 2, 2, 3, 3, 4]


def test_hourly_mean_needs_min_readings() -> None:
    hours = hourly([c(T0, 10.0), c(T0 + 600, 20.0), c(T0 + 1200, 30.0), c(T0 + H, 99.0)])
    assert hours[T0].means == {"pm2_5": 20.0} and hours[T0].counts == {"pm2_5": 3}
    assert hours[T0 + H].means == {}                # one reading is not an hour


def test_running_24h_mean_and_its_window() -> None:
    hours = hourly(series([10.0] * 12 + [100.0]))
    # 1h: the hour itself; 24h: (12 * 10 + 100) / 13 = 16.923 over 13 hours
    value, n = averaged(hours, T0 + 12 * H, "pm2_5", "1h")
    assert value == pytest.approx(100.0) and n == 1
    value, n = averaged(hours, T0 + 12 * H, "pm2_5", "24h")
    assert value == pytest.approx(220.0 / 13) and n == 13


def test_24h_averaging_delays_the_band_by_hand() -> None:
    # 24 clean hours at 10, then 60 µg/m³ from hour 24 on. Hourly: poor at once.
    # 24 h running mean: after k polluted hours ((24 - k) * 10 + 60 k) / 24, above 50
    # (poor) only when 240 + 50 k > 1200, k > 19.2: 19 hours give 1190/24 = 49.58
    # (moderate), 20 hours give 1240/24 = 51.67 (poor).
    scale24 = with_pm_averaging(EAQI, "24h")
    readings = series([10.0] * 24 + [60.0] * 20)
    first = T0 + 24 * H
    assert level_of(station_index("00002001", readings, first, EAQI), EAQI)[0] == 4
    levels = [level_of(station_index("00002001", readings, first + (k - 1) * H, scale24),
                       scale24)[0] for k in (1, 19, 20)]
    assert levels == [2, 3, 4]
    at19 = station_index("00002001", readings, first + 18 * H, scale24)
    assert at19.values["pm2_5"][0] == pytest.approx(1190.0 / 24)
    assert at19.status == "ok"                      # a full 24-hour window


def test_short_window_is_provisional() -> None:
    scale24 = with_pm_averaging(EAQI, "24h")
    index = station_index("00002001", series([10.0] * 17), T0 + 16 * H, scale24)
    assert index.values["pm2_5"][1] == 17 and index.reasons == {"short_window"}
    assert station_index("00002001", series([10.0] * 18), T0 + 17 * H,
                         scale24).status == "ok"


def test_station_level_is_its_worst_pollutant() -> None:
    # pm2_5 12 (fair), pm10 24 (fair) -> 2; pm10 50 alone is moderate -> 3
    index = station_index("00002001", series([12.0]), T0, EAQI)
    assert level_of(index, EAQI) == (2, "pm2_5")
    index = station_index("00002001", [c(T0, 12.0, 50.0), c(T0 + 600, 12.2, 50.0)],
                          T0, EAQI)
    assert level_of(index, EAQI) == (3, "pm10")


def test_notes_and_drops_make_the_station_provisional() -> None:
    readings = series([12.0])
    readings[0].notes.add("humid")
    readings[1].dropped["pm10"] = "pm_fault"
    index = station_index("00002001", readings, T0, EAQI)
    assert index.status == "provisional" and index.reasons == {"humid", "pm_fault"}


def test_a_stuck_sensor_is_withheld() -> None:
    flat = [c(T0 + k * 600, 7.0, 9.0) for k in range(12)]
    index = station_index("00002001", flat, T0 + H, EAQI)
    assert index.status == "withheld" and index.reasons == {"stuck"}
    assert station_index("00002001", flat[1:], T0 + H, EAQI).status == "ok"   # 11 flat


def test_no_readings_is_withheld() -> None:
    index = station_index("00002001", [], T0, EAQI)
    assert index.status == "withheld" and index.reasons == {"no_data"}


def test_area_drops_the_disagreeing_and_takes_the_median() -> None:
    # PM2.5 10, 12, 80: 80 is 68 from the others' upper median 12 (tolerance 12);
    # 10 and 12 are within 80 of theirs (80). Area: upper median of 10, 12 = 12: fair.
    stations = [station_index(d, series([v], device=d), T0, EAQI)
                for d, v in (("00000001", 10.0), ("00000002", 12.0), ("00000003", 80.0))]
    area = area_index("sentrum", stations, T0)
    assert area.stations == ["00000001", "00000002"]
    assert area.dropped == [{"station": "00000003", "reasons": ["neighbour_disagreement"]}]
    assert area.values["pm2_5"][0] == pytest.approx(12.0)
    assert level_of(area, EAQI) == (2, "pm2_5") and area.status == "provisional"


def test_area_with_every_station_withheld_is_withheld() -> None:
    stuck = station_index("00000001", [c(T0 + k * 300, 7.0) for k in range(12)], T0, EAQI)
    area = area_index("sentrum", [stuck], T0)
    assert area.status == "withheld" and area.reasons == {"station_dropped", "no_data"}


def test_documents_follow_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    station = station_index("00000001", series([60.0]), T0, EAQI)
    station.area = "sentrum"
    doc = document(station, "eaqi", SCALES, T0 + H + 5, 3 * H)
    validator.validate(doc)
    assert (doc["level"], doc["band"], doc["colour"]) == (4, "poor", "#ff5050")
    assert doc["scales"]["no"]["band"] == "high"            # 60 is in 50-150 in Norway
    assert doc["hour"].endswith(":00:00Z") and doc["status"] == "ok"
    area = area_index("sentrum", [station], T0)
    validator.validate(document(area, "no", SCALES, T0 + H, 3 * H))
    withheld = Index("area", "nord", T0, {}, {"no_data"}, True)
    doc = document(withheld, "eaqi", SCALES, T0 + H, 3 * H)
    validator.validate(doc)
    assert doc["level"] is None and doc["status"] == "withheld"

"""tools/power.py: the per-board current table, the power rows and the battery goal."""

from __future__ import annotations

from knute.tools import power
from knute.tools.cli import airtime


def test_rows_follow_the_contract_and_the_meter_reaches_ten_years() -> None:
    rows = power.rows()
    for row in rows:
        assert {"role", "board", "design", "uah_per_day", "battery_years"} <= set(row)
        assert row["design"] in power.DESIGNS
        assert abs(sum(row["parts_uah"].values()) - row["uah_per_day"]) < 1.0
    deep = [r for r in rows if r["role"] == "water_meter" and r["design"] == "deep_sleep"]
    assert deep and all(r["battery_years"] >= 10 for r in deep)
    light = [r for r in rows if r["role"] == "water_meter" and r["board"] == "meter_esp32"
             and r["design"] == "light_sleep"]
    # Light sleep beside deep sleep on the same board: more than 20 times the charge.
    assert light[0]["uah_per_day"] > 20 * deep[0]["uah_per_day"]
    assert any(r["role"] == "air_quality" for r in rows)


def test_every_figure_has_its_source() -> None:
    for board in power.BOARDS.values():
        for part in ("awake", "light", "radio_sleep", "rx", "tx", "regulator", "pulse"):
            assert board.sources.get(part), (board.name, part)


def test_a_day_of_states_turns_into_charge() -> None:
    board = power.BOARDS["meter_esp32"]
    hour = 3_600_000
    parts = power.day_uah(board, {"deep": 24 * hour})
    assert parts["deep_sleep"] == 240.0                  # 10 uA for 24 h
    parts = power.day_uah(board, {"tx": {(12, 14): hour}})
    assert parts["tx"] == 29000.0                        # 29 mA for an hour
    assert power.years(3_600_000 / 365.25) == 1.0


def test_airtime_assumes_the_table_and_names_the_design() -> None:
    assumed = power.assumed_battery()
    assert assumed["sleep_ua"] == airtime.DEFAULT_SLEEP_UA
    assert airtime.DESIGN == "deep_sleep on meter_esp32"
    data = airtime.table(airtime.Battery())
    assert data["battery"]["design"] == airtime.DESIGN

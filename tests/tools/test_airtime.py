"""protocol.airtime against published figures, on CPython and the unix port; `knute airtime`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knute.protocol import airtime
from knute.tools.cli import airtime as airtime_cli

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "airtime.txt"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


def test_reference_figures_hold_on_cpython_and_micropython(micropython_bin: Path) -> None:
    # tests/tools/upy_airtime.py cites each figure's source (FIELD-NOTES, TTN sheets).
    script = "tests/tools/upy_airtime.py"
    cpy = _run([sys.executable, script])
    upy = _run([str(micropython_bin), script])
    assert cpy.returncode == 0, cpy.stderr
    assert upy.returncode == 0, upy.stderr
    assert "failures 0" in cpy.stdout, cpy.stdout
    assert upy.stdout == cpy.stdout


@pytest.mark.parametrize(("payload", "sf", "ms"), [
    (20, 7, 56.576), (20, 12, 1318.912),           # FIELD-NOTES: about 57 ms and 1.32 s
    (37, 7, 82.176), (37, 10, 493.568), (37, 12, 1974.272),   # TTN sheet, 24 + 13 bytes
    (13, 12, 1155.072),                               # TTN forum: "1.16 seconds on SF12"
])
def test_published_time_on_air(payload: int, sf: int, ms: float) -> None:
    assert airtime.time_on_air_ms(payload, sf) == pytest.approx(ms, abs=1e-6)


def test_ldro_can_be_forced_and_changes_the_figure() -> None:
    # SHEET: 13 bytes at SF9 without LDRO = 164.864 ms; forcing LDRO costs symbols
    # (53 -> 63 payload symbols for 37 bytes at SF9).
    assert airtime.time_on_air_ms(13, 9, ldro=False) == pytest.approx(164.864)
    assert airtime.payload_symbols(37, 9, ldro=False) == 53
    assert airtime.payload_symbols(37, 9, ldro=True) == 63


@given(st.integers(0, 254), st.integers(6, 12), st.sampled_from([125000, 250000, 500000]),
       st.integers(5, 8))
def test_time_on_air_grows_with_payload_and_coding_rate(n: int, sf: int, bw: int,
                                                        cr: int) -> None:
    base = airtime.time_on_air_ms(n, sf, bw, cr)
    assert airtime.time_on_air_ms(n + 1, sf, bw, cr) >= base
    if cr < 8:
        assert airtime.time_on_air_ms(n, sf, bw, cr + 1) >= base
    # A whole number of symbols plus the 4.25-symbol preamble tail.
    symbols = base / airtime.symbol_time_ms(sf, bw)
    assert symbols * 4 == pytest.approx(round(symbols * 4))


@given(st.integers(0, 255), st.integers(7, 11))
def test_a_higher_spreading_factor_never_takes_less_time(n: int, sf: int) -> None:
    assert airtime.time_on_air_ms(n, sf + 1) > airtime.time_on_air_ms(n, sf)


@pytest.mark.parametrize(("payload", "sf", "cr"), [(256, 7, 5), (10, 13, 5), (10, 7, 4)])
def test_out_of_range_parameters_are_refused(payload: int, sf: int, cr: int) -> None:
    with pytest.raises(ValueError):
        airtime.time_on_air_ms(payload, sf, cr=cr)


def test_sub_bands_and_budget() -> None:
    assert airtime.sub_band(868100000) == ("g1", 100)
    assert airtime.sub_band(869525000) == ("g3", 1000)
    with pytest.raises(ValueError):
        airtime.sub_band(868650000)          # straddles g1 and g2: no single limit
    toa = airtime.time_on_air_ms(20, 12)
    assert airtime.uplinks_per_hour(toa, 100) == int(36000 // toa)
    assert airtime.min_interval_s(toa, 100) == pytest.approx(toa / 10)


def test_payload_json_prints_exactly_three_keys(knute_bin: Path) -> None:
    result = _run([str(knute_bin), "airtime", "--payload", "20", "--sf", "12", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"payload": 20, "sf": 12, "time_on_air_ms": 1318.912}


def test_table_text_matches_golden(knute_bin: Path) -> None:
    # Regenerate after a deliberate change: knute airtime > tests/tools/golden/airtime.txt
    result = _run([str(knute_bin), "airtime"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == GOLDEN.read_text()


def test_table_json_uses_real_frame_sizes(knute_bin: Path) -> None:
    from knute.tools.sim.typical import typical_frame

    result = _run([str(knute_bin), "airtime", "--json"])
    data = json.loads(result.stdout)
    water = data["kinds"]["water_meter"]
    assert water["knute_bytes"] == len(typical_frame("water_meter"))
    assert water["lorawan_bytes"] == 13 + water["oms_payload_bytes"]
    assert sum(p["bytes"] for p in water["oms_breakdown"]) == water["oms_payload_bytes"]
    # The AES-CBC part is whole 16-byte blocks: payload minus TPL (6) and AFL (17).
    assert (water["oms_payload_bytes"] - 23) % 16 == 0
    rows = {r["sf"]: r for r in water["rows"]}
    assert sorted(rows) == [7, 8, 9, 10, 11, 12]
    assert rows[12]["knute"]["time_on_air_ms"] == pytest.approx(
        airtime.time_on_air_ms(water["knute_bytes"], 12), abs=1e-3)
    assert rows[12]["knute"]["uplinks_per_hour"]["g1"] == airtime.uplinks_per_hour(
        rows[12]["knute"]["time_on_air_ms"], 100)
    assert rows[12]["lorawan"]["fits"] is (water["oms_payload_bytes"] <= 51)
    # Fewer bytes on air: knute's water meter outlives the LoRaWAN one at every SF.
    assert all(r["knute"]["battery_years"] >= r["lorawan"]["battery_years"] for r in rows.values())


def test_battery_model() -> None:
    cell = airtime_cli.Battery(capacity_mah=3600, sleep_ua=27, tx_ma=0.0)
    # 27 uA alone for a year is 236.7 mAh, plus 36 mAh self-discharge.
    assert cell.life_years(0, 4) == pytest.approx(3600 / (0.027 * 8766 + 36))
    assert cell.life_years(1000, 4) == cell.life_years(0, 4)
    busy = airtime_cli.Battery(tx_ma=100)
    assert busy.life_years(2000, 24) < busy.life_years(100, 24)


def test_bad_payload_is_one_line_exit_2(knute_bin: Path) -> None:
    result = _run([str(knute_bin), "airtime", "--payload", "300", "--json"])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "0..255" in result.stderr

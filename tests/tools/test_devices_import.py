"""``knute devices import`` against hostile files, run as the real command (issue 11, item 7).

Every bad file is one line on stderr naming the file and the line, exit 2, and
nothing imported; files that can be read correctly (a BOM, UTF-16) are.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.gateway.registry import Device, Registry

KEY1 = "00112233445566778899aabbccddeeff"
KEY2 = "ffeeddccbbaa99887766554433221100"
KEY3 = "0f0e0d0c0b0a09080706050403020100"
HEADER = "device_id,kind,key,name,site,lat,lon\n"


def run_import(knute: Path, registry: Path, csv_file: Path) -> subprocess.CompletedProcess[str]:
    """``knute devices import FILE --registry REG``."""
    return subprocess.run([str(knute), "devices", "import", str(csv_file),
                           "--registry", str(registry)],
                          capture_output=True, text=True, timeout=60)


def registered(registry: Path) -> dict[int, Device]:
    """What the registry holds."""
    reg = Registry(str(registry))
    try:
        return reg.snapshot()
    finally:
        reg.close()


def refused(knute: Path, tmp_path: Path, data: bytes, *needles: str) -> str:
    """Import ``data``; check one error line with every needle and an empty registry."""
    csv_file = tmp_path / "devices.csv"
    csv_file.write_bytes(data)
    registry = tmp_path / "registry.db"
    out = run_import(knute, registry, csv_file)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"knute devices: {csv_file}"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert registered(registry) == {}
    return lines[0]


def test_an_unterminated_quote_does_not_swallow_the_rows_after_it(
        tmp_path: Path, knute_bin: Path) -> None:
    data = (HEADER + f'00000001,water_meter,{KEY1},"Storgata 1,north,59.9,10.7\n'
            f"00000002,water_meter,{KEY2},Storgata 2,north,59.9,10.7\n"
            f"00000003,water_meter,{KEY3},Storgata 3,north,59.9,10.7\n").encode()
    refused(knute_bin, tmp_path, data, "line 2:", "quote")


def test_a_closed_quote_spanning_lines_is_refused_too(tmp_path: Path, knute_bin: Path) -> None:
    data = (HEADER + f'00000001,water_meter,{KEY1},"Storgata\n1",north,59.9,10.7\n').encode()
    refused(knute_bin, tmp_path, data, "line 2:", "runs on to line 3")


def test_a_utf8_bom_and_utf16_files_are_imported(tmp_path: Path, knute_bin: Path) -> None:
    text = HEADER + f"00000001,water_meter,{KEY1},Ærøgata 1,nord,59.91,10.75\n"
    for n, data in enumerate([text.encode("utf-8-sig"), text.encode("utf-16"),
                              text.encode("utf-16-be").join([b"\xfe\xff", b""])]):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "d.csv").write_bytes(data)
        out = run_import(knute_bin, folder / "r.db", folder / "d.csv")
        assert out.returncode == 0, out.stderr
        devices = registered(folder / "r.db")
        assert devices[1].name == "Ærøgata 1"
        assert devices[1].location == {"lat": 59.91, "lon": 10.75}


def test_latin1_names_the_line_and_column(tmp_path: Path, knute_bin: Path) -> None:
    data = (HEADER + f"00000001,water_meter,{KEY1},Storgata 1,nord,59.9,10.7\n"
            f"00000002,water_meter,{KEY2},Ærøgata 2,nord,59.9,10.7\n").encode("latin-1")
    column = len(f"00000002,water_meter,{KEY2},") + 1
    refused(knute_bin, tmp_path, data, "line 3:", "not UTF-8", f"column {column}", "0xc6")


def test_utf16_without_a_bom_is_an_error_not_a_traceback(tmp_path: Path,
                                                         knute_bin: Path) -> None:
    data = (HEADER + f"00000001,water_meter,{KEY1},a,b,1,2\n").encode("utf-16-le")
    refused(knute_bin, tmp_path, data, "line 1:")


def test_a_field_over_the_limit_names_its_line(tmp_path: Path, knute_bin: Path) -> None:
    data = (HEADER + f"00000001,water_meter,{KEY1},a,b,1,2\n"
            f"00000002,water_meter,{KEY2},{'x' * (200 * 1024)},b,1,2\n").encode()
    refused(knute_bin, tmp_path, data, "line 3:", "longer than 128 KiB")


def test_reimporting_is_idempotent_and_a_changed_row_needs_update(tmp_path: Path,
                                                                  knute_bin: Path) -> None:
    csv_file = tmp_path / "d.csv"
    registry = tmp_path / "registry.db"
    csv_file.write_text(HEADER + f"00000001,water_meter,{KEY1},a,b,1,2\n")
    assert run_import(knute_bin, registry, csv_file).returncode == 0
    # The same row again is no error: it changes nothing; the new row goes in.
    csv_file.write_text(HEADER + f"00000002,water_meter,{KEY2},a,b,1,2\n"
                        f"00000001,water_meter,{KEY1},a,b,1,2\n")
    out = run_import(knute_bin, registry, csv_file)
    assert out.returncode == 0, out.stderr
    assert "1 unchanged" in out.stdout
    assert sorted(registered(registry)) == [1, 2]
    # A changed row is refused, naming its line and what differs, until confirmed.
    csv_file.write_text(HEADER + f"00000003,water_meter,{KEY3},a,b,1,2\n"
                        f"00000001,water_meter,{KEY2},a,c,1,2\n")
    out = run_import(knute_bin, registry, csv_file)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"knute devices: {csv_file} line 3: device 00000001 is "
                                  "already registered with another key, site; nothing "
                                  "imported; import again with --update to change them")
    assert sorted(registered(registry)) == [1, 2]
    out = subprocess.run([str(knute_bin), "devices", "import", str(csv_file), "--update",
                          "--json", "--registry", str(registry)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"imported": 2, "updated": 1}
    assert registered(registry)[1].key.hex() == KEY2


@pytest.mark.parametrize("lat,lon", [("nan", "10.7"), ("59.9", "inf"), ("-Infinity", "1"),
                                     ("91", "10"), ("north", "10")])
def test_non_finite_or_out_of_range_coordinates_are_refused(
        tmp_path: Path, knute_bin: Path, lat: str, lon: str) -> None:
    data = (HEADER + f"00000001,water_meter,{KEY1},a,b,1,2\n"
            f"00000002,water_meter,{KEY2},a,b,{lat},{lon}\n").encode()
    refused(knute_bin, tmp_path, data, "line 3:")


def test_nan_in_a_location_json_column_is_refused(tmp_path: Path, knute_bin: Path) -> None:
    data = ("device_id,kind,key,location\n"
            f'00000001,water_meter,{KEY1},"{{""lat"": NaN}}"\n').encode()
    refused(knute_bin, tmp_path, data, "line 2:", "NaN")


def test_unquoted_comma_is_refused(tmp_path: Path, knute_bin: Path) -> None:
    data = (HEADER + f"00000001,water_meter,{KEY1},Storgata 1, Oslo,b,1,2\n").encode()
    refused(knute_bin, tmp_path, data, "line 2:", "8 fields", "7 columns")


def test_devices_add_refuses_nan_coordinates(tmp_path: Path, knute_bin: Path) -> None:
    out = subprocess.run([str(knute_bin), "devices", "add", "00000001", "--kind",
                          "water_meter", "--key", KEY1, "--lat", "nan", "--lon", "1",
                          "--registry", str(tmp_path / "r.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a finite number" in out.stderr, out


def test_an_old_registry_holding_nan_still_publishes_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    reg = Registry(str(path))
    reg.add(1, "water_meter", KEY1, site="north", location={"lat": 59.9, "address": "x"})
    db = reg._db                     # a value written before locations were checked
    with db:
        db.execute("""UPDATE devices SET location = '{"lat": NaN, "lon": Infinity,
                      "address": "x"}'""")
    dev = reg.get(1)
    reg.close()
    assert dev is not None
    assert math.isnan(dev.location["lat"])
    site = dev.site_info()
    assert site == {"site": "north", "lat": None, "lon": None, "address": "x"}
    json.loads(json.dumps(site, allow_nan=False))
    other = Registry(str(tmp_path / "s.db"))
    try:
        with pytest.raises(KnuteError, match="not a finite number"):
            other.add(2, "water_meter", KEY2, location={"lon": float("inf")})
    finally:
        other.close()

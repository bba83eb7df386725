"""The device registry: schema, migrations, CSV import, keys kept private."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from knute.gateway.device_csv import csv_header, csv_line
from knute.gateway.device_fields import format_device_id, parse_device_id
from knute.gateway.errors import KnuteError
from knute.gateway.registry import SCHEMA_VERSION, DeviceExists, Registry, Seen, create_v1

KEY = "000102030405060708090a0b0c0d0e0f"


def test_device_id_forms() -> None:
    assert parse_device_id("4660") == 0x1234
    assert parse_device_id("0x1234") == 0x1234
    assert parse_device_id("00001234") == 0x1234
    assert format_device_id(0x1234) == "00001234"
    for bad in ("x", "0x1ffffffff", "-1", "4294967296"):
        with pytest.raises(KnuteError):
            parse_device_id(bad)


def test_add_get_remove_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "registry.db"
    reg = Registry(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert reg.version == SCHEMA_VERSION
    dev = reg.add(0x1234, "water_meter", KEY, name="Storgata 1", site="north",
                  location={"lat": 63.43})
    assert KEY not in repr(dev) and bytes.fromhex(KEY).hex() not in repr(dev)
    assert "key" not in dev.as_dict()
    assert dev.as_dict(show_key=True)["key"] == KEY
    with pytest.raises(DeviceExists, match="00001234"):
        reg.add("00001234", "water_meter", KEY)
    with pytest.raises(KnuteError, match="unknown kind"):
        reg.add(7, "toaster", KEY)
    with pytest.raises(KnuteError, match="32 hex"):
        reg.add(7, "water_meter", "abcd")
    got = reg.get(0x1234)
    assert got is not None and got.key == bytes.fromhex(KEY)
    assert got.site_info() == {"site": "north", "lat": 63.43}
    reg.record_seen([Seen(0x1234, 17, 1_700_000_000.0, 90, ("leak",))])
    got = reg.get(0x1234)
    assert got is not None
    assert (got.last_fcnt, got.battery, got.alarms) == (17, 90, ("leak",))
    reg.clear_counter(0x1234)
    assert reg.get(0x1234).last_fcnt is None  # type: ignore[union-attr]
    reg.remove(0x1234)
    assert reg.get(0x1234) is None
    with pytest.raises(KnuteError):
        reg.remove(0x1234)
    reg.close()


def test_migration_from_v1_file(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    create_v1(path)
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO devices (device_id, kind, key, name) VALUES (?, ?, ?, ?)",
                   (0x42, "air_quality", bytes.fromhex(KEY), "Torget"))
    db.close()
    reg = Registry(path)
    assert reg.version == SCHEMA_VERSION == 4
    dev = reg.get(0x42)
    assert dev is not None
    assert (dev.kind, dev.name, dev.site, dev.last_fcnt, dev.alarms) == (
        "air_quality", "Torget", "", None, ())
    reg.add(0x43, "water_meter", KEY, site="south")
    reg.close()
    reopened = Registry(path)
    assert [d.device_id for d in reopened.all()] == [0x42, 0x43]
    reopened.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(KnuteError, match="newer"):
        Registry(path)


def test_csv_import_all_or_nothing(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "r.db"))
    good = csv_header() + csv_line(1, "water_meter", KEY, "a", "north", {"lat": 1.5}) + \
        csv_line(2, "air_quality", bytes.fromhex(KEY), "b")
    assert reg.import_csv(good) == 2
    assert reg.get(1).location == {"lat": 1.5}  # type: ignore[union-attr]
    # Line 3 is bad: nothing of the file goes in.
    bad = csv_header() + csv_line(3, "water_meter", KEY) + "4,water_meter,zz\n"
    with pytest.raises(KnuteError, match="line 3"):
        reg.import_csv(bad)
    assert reg.get(3) is None
    # An id that is already registered also rejects the whole file.
    clash = csv_header() + csv_line(5, "water_meter", KEY) + csv_line(1, "water_meter", KEY)
    with pytest.raises(DeviceExists, match="nothing imported"):
        reg.import_csv(clash)
    assert reg.get(5) is None
    dup = f"device_id,kind,key,address\n6,water_meter,{KEY},Gata 1\n0x6,water_meter,{KEY},x\n"
    with pytest.raises(KnuteError, match="twice"):
        reg.import_csv(dup)
    extra = f"device_id,kind,key,address,lat\n00000007,water_meter,{KEY},Gata 1,63.4\n"
    assert reg.import_csv(extra) == 1
    assert reg.get(7).location == {"address": "Gata 1", "lat": 63.4}  # type: ignore[union-attr]
    with pytest.raises(KnuteError, match="lacks"):
        reg.import_csv("device_id,name\n1,x\n")
    reg.close()


def test_devices_cli(tmp_path: Path, knute_bin: Path) -> None:
    reg = str(tmp_path / "reg.db")

    def knute(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(knute_bin), "devices", *args, "--registry", reg],
                              capture_output=True, text=True, timeout=60)

    out = knute("add", "0x1234", "--kind", "water_meter", "--key", KEY, "--name", "Gata 2")
    assert out.returncode == 0, out.stderr
    assert KEY not in out.stdout
    listing = knute("list")
    assert "00001234" in listing.stdout and KEY not in listing.stdout
    assert KEY in knute("show", "00001234", "--show-key").stdout
    again = knute("add", "4660", "--kind", "water_meter", "--key", KEY)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already registered" in again.stderr
    csv_path = tmp_path / "district.csv"
    csv_path.write_text(csv_header() + csv_line(10, "air_quality", KEY, "x")
                        + csv_line(11, "water_meter", KEY, "y"))
    assert knute("import", str(csv_path), "--json").stdout.strip() == '{"imported": 2}'
    assert knute("remove", "10").returncode == 0
    assert knute("show", "10").returncode == 2

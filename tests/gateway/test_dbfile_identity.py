"""A file that is not a knute database is never moved aside or replaced (issue 11, item 5/6).

The registry and spool openers look at the SQLite header, the application id
and the schema version before they treat a file as a damaged knute database.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from knute.gateway.dbfile import (
    REGISTRY_APP_ID,
    SPOOL_APP_ID,
    NotKnuteFile,
    check_identity,
)
from knute.gateway.errors import KnuteError
from knute.gateway.registry import SCHEMA_VERSION, Registry, create_v1
from knute.gateway.spool import Spool, SpoolError

CONFIG = """[gateway]
id = "district-3"
[mqtt]
host = "broker.example"
[[serial]]
name = "radio"
url = "/dev/ttyUSB0"
"""


def digest(path: Path) -> str:
    """The file's content hash, to prove it was left alone."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """The names in a folder."""
    return sorted(os.listdir(folder))


def test_a_config_file_passed_as_registry_is_left_alone(tmp_path: Path,
                                                        knute_bin: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    before = digest(config)
    out = subprocess.run([str(knute_bin), "devices", "list", "--registry", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "gateway.toml is not a knute registry" in lines[0]
    assert "TOML" in lines[0] and "[gateway]" in lines[0]
    assert digest(config) == before
    assert listing(tmp_path) == ["gateway.toml"]


@pytest.mark.parametrize("content", [
    b"device_id,kind,key\n00000001,water_meter," + b"0" * 32 + b"\n",
    bytes(range(256)) * 20,
    b"this is not a database " * 500,
])
def test_garbage_is_refused_by_both_openers(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(KnuteError, match="is not a knute registry database: it is"):
        Registry(str(path))
    with pytest.raises(SpoolError, match="is not a knute spool database: it is"):
        Spool(str(path), max_bytes=1 << 20, max_age_s=3600.0)
    assert path.read_bytes() == content
    assert listing(tmp_path) == ["x.db"]


def test_the_other_knute_database_is_named(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.db"
    Spool(str(spool_path), max_bytes=1 << 20, max_age_s=3600.0).close()
    reg_path = tmp_path / "registry.db"
    Registry(str(reg_path)).close()
    names = listing(tmp_path)
    with pytest.raises(NotKnuteFile, match=r"spool\.db is a knute spool, not a registry"):
        Registry(str(spool_path))
    with pytest.raises(SpoolError, match=r"registry\.db is a knute registry, not a spool"):
        Spool(str(reg_path), max_bytes=1 << 20, max_age_s=3600.0)
    assert listing(tmp_path) == names


def test_a_foreign_sqlite_database_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "billing.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (n INTEGER)")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(NotKnuteFile, match=r"not a knute registry \(tables: invoices\)"):
        Registry(str(path))
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("PRAGMA application_id = 1234")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(NotKnuteFile, match="another application"):
        Registry(str(other))
    assert digest(path) == before
    assert listing(tmp_path) == ["billing.db", "other.db"]


def test_new_and_old_files_carry_or_get_the_application_id(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    create_v1(str(old))                      # made before the application id existed
    check_identity(str(old), "registry", REGISTRY_APP_ID, SCHEMA_VERSION)
    reg = Registry(str(old))
    reg.add(1, "water_meter", bytes(16))
    reg.close()
    for path, app_id in ((old, REGISTRY_APP_ID), (tmp_path / "s.db", SPOOL_APP_ID)):
        if app_id == SPOOL_APP_ID:
            Spool(str(path), max_bytes=1 << 20, max_age_s=3600.0).close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA application_id").fetchone()[0] == app_id
        db.close()


def test_a_damaged_knute_registry_is_still_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    reg = Registry(str(path))
    for n in range(200):
        reg.add(0x100 + n, "water_meter", bytes([n]) * 16, name=f"m{n}" * 20)
    reg.close()
    size = path.stat().st_size
    with path.open("r+b") as fh:                 # trash pages past the header page
        fh.seek(4096 * 2)
        fh.write(b"\xa5" * min(4096 * 4, size - 4096 * 2))
    again = Registry(str(path))
    again.close()
    assert any(".corrupt-" in name for name in listing(tmp_path))


def test_a_registry_open_elsewhere_is_recognised_from_its_wal(tmp_path: Path) -> None:
    # While a gateway holds the registry, the schema, version and application id of
    # a fresh file may sit only in the -wal file: the header on disk is stale.
    path = tmp_path / "registry.db"
    holder = Registry(str(path))
    try:
        assert (tmp_path / "registry.db-wal").exists()
        check_identity(str(path), "registry", REGISTRY_APP_ID, SCHEMA_VERSION)
        other = Registry(str(path))              # knute devices beside the gateway
        other.add(7, "water_meter", bytes(16))
        other.close()
        assert holder.get(7) is not None
    finally:
        holder.close()

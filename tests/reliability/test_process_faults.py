"""kill -9 of the gateway under load, and corrupt or truncated files at start-up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from knute.gateway.registry import Registry
from knute.tools.bench import reliability as rel
from knute.tools.bench.reliability.damage import scribble
from tests.reliability.conftest import check


def test_gateway_kill9_three_times_under_load(tmp_path: Path) -> None:
    result = rel.case_kill9(tmp_path, cycles=3)
    check(result)
    assert result.notes["kills"] == 3 and result.accepted > 0


@pytest.mark.slow
def test_gateway_kill9_fifty_times_under_load(tmp_path: Path) -> None:
    result = rel.case_kill9(tmp_path, cycles=50)
    check(result)
    assert result.notes["kills"] == 50


def test_corrupt_spool_and_registry_at_start_up(tmp_path: Path) -> None:
    result = rel.case_corrupt_files(tmp_path)
    check(result)
    assert result.notes["salvaged_rows"] > 0
    assert result.notes["devices_salvaged"] > 0


def test_registry_salvage_keeps_readable_devices(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    reg = Registry(path)
    for n in range(300):
        reg.add(0x100 + n, "water_meter", bytes([n % 256]) * 16, name=f"m{n}")
    reg.close()
    scribble(path, 0.6, 4096, seed=3)
    again = Registry(path)
    try:
        devices = again.all()
        assert 0 < len(devices) <= 300
        for dev in devices:                           # what was kept is intact
            assert dev.key == bytes([(dev.device_id - 0x100) % 256]) * 16
    finally:
        again.close()
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert moved and all(p.stat().st_mode & 0o777 == 0o600 for p in moved
                         if not p.name.endswith("-shm"))


@pytest.mark.slow
def test_a_busy_registry_is_not_mistaken_for_a_corrupt_one(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    Registry(path).close()
    holder = sqlite3.connect(path, timeout=0.1)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(Exception, match="locked"):
            reg = Registry(path)
            reg.add(1, "water_meter", bytes(16))
    finally:
        holder.rollback()
        holder.close()
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]

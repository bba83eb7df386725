"""``knute devices`` beside a running gateway: never as root on the gateway's files, and
no offline counter reset under a gateway that holds the spool."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from knute.gateway.dbfile import DataLock
from knute.gateway.registry import Registry
from knute.gateway.spool import Spool

KEY = "00112233445566778899aabbccddeeff"
NOBODY = 65534


def knute(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``knute ARGS``."""
    return subprocess.run([str(knute_bin), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_root_is_sent_to_the_registry_owner(tmp_path: Path, knute_bin: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(str(path)).close()
    os.chown(path, NOBODY, NOBODY)
    out = knute(knute_bin, "devices", "add", "00000001", "--kind", "water_meter", "--key", KEY,
                "--registry", str(path))
    assert out.returncode == 2
    assert "belongs to user" in out.stderr and "sudo -u" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.db"]   # no root -wal


def test_offline_reset_counter_refuses_a_spool_held_by_a_gateway(tmp_path: Path,
                                                                  knute_bin: Path) -> None:
    registry = tmp_path / "registry.db"
    reg = Registry(str(registry))
    reg.add(1, "water_meter", KEY)
    reg.close()
    spool_path = str(tmp_path / "spool.db")
    Spool(spool_path, max_bytes=1 << 20, max_age_s=3600.0).close()
    lock = DataLock(spool_path)
    lock.acquire()
    try:
        out = knute(knute_bin, "devices", "reset-counter", "00000001", "--registry",
                    str(registry), "--spool", spool_path)
        assert out.returncode == 2
        assert f"a gateway (pid {os.getpid()}) is running on {spool_path}" in out.stderr
    finally:
        lock.release()
    out = knute(knute_bin, "devices", "reset-counter", "00000001", "--registry", str(registry),
                "--spool", spool_path)
    assert out.returncode == 0, out.stderr

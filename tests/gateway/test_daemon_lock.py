"""One gateway per spool, a status socket never taken from a running gateway, and
registry changes picked up without a signal (issue 11, items 5 and 9).

Every gateway here is a real ``knute gateway run`` process with a packet-forwarder
source; no broker is needed (the forwarder keeps retrying, frames stay spooled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.gateway.status import request
from knute.protocol import frame
from knute.tools.rig.wait import wait_for
from tests.conftest import free_port
from tests.gateway.pf_client import PacketForwarder, rxpk

KEY_HEX = bytes(range(16)).hex()
METER = 0x00004242


class Install:
    """A gateway configuration and its process."""

    def __init__(self, root: Path, knute: Path, *, data: Path, socket: str,
                 metrics_port: int | None = None, udp_port: int | None = None) -> None:
        self.root = root
        self.knute = knute
        self.data = data
        self.socket = socket
        self.udp_port = udp_port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "gateway.toml"
        metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
        self.config.write_text(f"""
[gateway]
id = "gw-lock"
data_dir = "{data}"
drain_timeout_s = 0
[status]
socket = "{socket}"
{metrics}[mqtt]
host = "127.0.0.1"
port = {free_port()}
prefix = "t"
[[packet_forwarder]]
name = "concentrator"
listen = "127.0.0.1:{self.udp_port}"
""")
        self.log = root / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        """Start ``knute gateway run`` (without waiting)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.knute), "gateway", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        return self.proc

    def start_and_wait(self) -> None:
        """Start and wait until the status socket answers."""
        proc = self.start()

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited {proc.returncode}: "
                                     + self.log.read_text())
            try:
                return bool(self.status())
            except OSError:
                return False

        wait_for(ready, 60, "status socket")

    def status(self) -> dict[str, Any]:
        """The live status."""
        return request(self.socket, {"cmd": "status"})

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for unix sockets (their paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="kgl", dir="/tmp") as path:
        yield path


def failed_start(inst: Install) -> tuple[int, str]:
    """Run a gateway that is expected to refuse; (exit status, stderr)."""
    out = subprocess.run([str(inst.knute), "gateway", "run", "--config", str(inst.config)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stderr


def test_a_second_gateway_on_the_same_spool_refuses_to_start(
        tmp_path: Path, knute_bin: Path, sock_dir: str) -> None:
    data = tmp_path / "data"
    first = Install(tmp_path / "a", knute_bin, data=data, socket=f"{sock_dir}/a.sock")
    # Same data directory, its own ports and socket: nothing else would stop it.
    second = Install(tmp_path / "b", knute_bin, data=data, socket=f"{sock_dir}/b.sock")
    first.start_and_wait()
    try:
        code, err = failed_start(second)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "in use by another gateway" in lines[0]
        assert first.proc is not None and f"pid {first.proc.pid}" in lines[0]
        assert not os.path.exists(second.socket)
        assert first.status()["gateway"] == "gw-lock"          # the first one runs on
    finally:
        assert first.stop() == 0
    # Once the first one has stopped, the lock is free again (kill -9 frees it too).
    second.start_and_wait()
    assert second.proc is not None
    second.proc.kill()
    second.proc.wait(timeout=30)
    first.start_and_wait()
    assert first.stop() == 0


@pytest.mark.parametrize("busy", ["metrics", "udp", "none"])
def test_a_failed_second_start_leaves_the_running_status_socket(
        tmp_path: Path, knute_bin: Path, sock_dir: str, busy: str) -> None:
    socket_path = f"{sock_dir}/gw.sock"
    metrics_port = free_port()
    first = Install(tmp_path / "a", knute_bin, data=tmp_path / "a-data", socket=socket_path,
                    metrics_port=metrics_port)
    # Its own data directory (so no lock stops it) but the same status socket, and a
    # port the first gateway holds.
    second = Install(tmp_path / "b", knute_bin, data=tmp_path / "b-data", socket=socket_path,
                     metrics_port=metrics_port if busy == "metrics" else None,
                     udp_port=first.udp_port if busy == "udp" else None)
    first.start_and_wait()
    try:
        inode = os.stat(socket_path).st_ino
        code, err = failed_start(second)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert os.stat(socket_path).st_ino == inode
        assert first.status()["gateway"] == "gw-lock"
    finally:
        assert first.stop() == 0
    assert not os.path.exists(socket_path)       # the first one still removes its own


def test_devices_added_to_a_running_gateway_are_picked_up_without_a_signal(
        tmp_path: Path, knute_bin: Path, sock_dir: str) -> None:
    gw = Install(tmp_path / "gw", knute_bin, data=tmp_path / "data",
                 socket=f"{sock_dir}/gw.sock")
    gw.start_and_wait()
    pf = PacketForwarder("127.0.0.1", gw.udp_port)
    try:
        def accepted() -> int:
            return int(gw.status()["totals"]["accepted"])

        def send(fcnt: int) -> None:
            pf.push(rxpk(frame.encode("water_meter", METER, fcnt,
                                      {"index": 100 + fcnt, "profile_end_h": 3,
                                       "battery": 19, "profile": [1]}, bytes(range(16)))))

        send(1)
        wait_for(lambda: gw.status()["rejected"].get("unknown_device", 0) >= 1,
                 what="the unknown device rejected")
        # --registry only and no reachable configuration: nobody tells the gateway.
        env = {**os.environ, "KNUTE_CONFIG": str(tmp_path / "no-such.toml")}
        out = subprocess.run(
            [str(knute_bin), "devices", "add", f"{METER:08x}", "--kind", "water_meter",
             "--key", KEY_HEX, "--registry", str(tmp_path / "data" / "registry.db")],
            capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        fcnt = 2

        def picked_up() -> bool:
            nonlocal fcnt
            fcnt += 1
            send(fcnt)
            return accepted() >= 1

        wait_for(picked_up, 30, "a frame of the added device accepted")
        assert gw.status()["devices"] == 1
        out = subprocess.run(
            [str(knute_bin), "devices", "remove", f"{METER:08x}",
             "--registry", str(tmp_path / "data" / "registry.db")],
            capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: gw.status()["devices"] == 0, 30, "the removed device dropped")
    finally:
        pf.close()
        assert gw.stop() == 0
    assert "Traceback" not in gw.log.read_text()


def test_a_registry_restored_with_the_backup_api_is_read_and_a_copied_one_is_not(
        tmp_path: Path, knute_bin: Path, sock_dir: str) -> None:
    import sqlite3

    from knute.gateway.registry import Registry

    data = tmp_path / "data"
    gw = Install(tmp_path / "gw", knute_bin, data=data, socket=f"{sock_dir}/gw.sock")
    gw.start_and_wait()
    try:
        assert gw.status()["devices"] == 0
        backup = tmp_path / "backup.db"
        reg = Registry(str(backup))
        reg.add(METER, "water_meter", KEY_HEX)
        reg.add(METER + 1, "water_meter", KEY_HEX)
        reg.close()
        # sqlite3 registry.db ".restore backup.db": through SQLite's locks.
        src = sqlite3.connect(backup)
        dst = sqlite3.connect(data / "registry.db")
        src.backup(dst)
        src.close()
        dst.close()
        wait_for(lambda: gw.status()["devices"] == 2, 30, "the restored registry read")
        # A file copied over the open registry is refused with one line, devices kept.
        other = tmp_path / "other.db"
        Registry(str(other)).close()
        os.replace(other, data / "registry.db")
        checks = gw.status()["registry"]["checks"]
        wait_for(lambda: gw.status()["registry"]["checks"] >= checks + 3, 30, "three polls")
        assert gw.status()["devices"] == 2
    finally:
        assert gw.stop() == 0
    log = gw.log.read_text()
    assert "Traceback" not in log
    assert log.count("was replaced while the gateway had it open") == 1

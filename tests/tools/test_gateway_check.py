"""``knute gateway check`` checks what it can offline and, with ``--online``, the broker
and the sources; a bad CA stops the gateway once with exit 78 instead of a traceback
per reconnect (issue 11, items 8 and 12)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from knute.gateway.config import TlsSettings
from knute.gateway.errors import EXIT_CONFIG
from knute.gateway.forwarder import Forwarder
from knute.gateway.spool import Spool
from tests.conftest import Broker, free_port
from tests.gateway.test_forwarder import fast_cfg

MAP = """
[[modbus.bus]]
name = "plant"
tcp = "127.0.0.1:{modbus_port}"
[[modbus.device]]
bus = "plant"
unit_id = 1
device_id = "0x1000a001"
map = "generic_water_meter"
"""


def write_config(folder: Path, *, data_dir: str = "data", serial: str | None = None,
                 ca: str | None = None, mqtt_port: int = 1883, udp_port: int | None = None,
                 modbus_port: int | None = None) -> Path:
    """A gateway configuration in ``folder``; the data directory is created."""
    (folder / "data").mkdir(exist_ok=True)
    text = f'[gateway]\nid = "gw-check"\ndata_dir = "{data_dir}"\n'
    text += f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
    if ca is not None:
        text += f'[mqtt.tls]\nca = "{ca}"\n'
    text += f'[[packet_forwarder]]\nname = "pf"\nlisten = "127.0.0.1:{udp_port or free_port()}"\n'
    if serial is not None:
        text += f'[[serial]]\nname = "radio"\nurl = "{serial}"\n'
    if modbus_port is not None:
        text += MAP.format(modbus_port=modbus_port)
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def check(knute_bin: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``knute gateway check --config FILE ...``."""
    return subprocess.run([str(knute_bin), "gateway", "check", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=120)


def test_a_sound_configuration_passes(tmp_path: Path, knute_bin: Path) -> None:
    out = check(knute_bin, write_config(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "OK (gateway gw-check, 1 sources: pf" in out.stdout
    # ... and which payload walk the gateway runs: the compiled one where it is built
    from knute.gateway import fastframe
    assert f"payload walk: {fastframe.FAST_PATH} (" in out.stdout
    summary = json.loads(check(knute_bin, write_config(tmp_path), "--json").stdout)
    assert summary["fast_path"] == fastframe.FAST_PATH


def test_modbus_counts_as_a_source(tmp_path: Path, knute_bin: Path) -> None:
    out = check(knute_bin, write_config(tmp_path, modbus_port=free_port()), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert [s["name"] for s in summary["sources"]] == ["pf", "modbus"]
    text = check(knute_bin, write_config(tmp_path, modbus_port=free_port()))
    assert "2 sources: pf, modbus" in text.stdout


def test_offline_problems_are_each_one_line(tmp_path: Path, knute_bin: Path) -> None:
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("this is not a certificate\n")
    config = write_config(tmp_path, data_dir="missing", serial="/dev/ttyKNUTE-none",
                          ca=str(bad_ca))
    (tmp_path / "data").rmdir()
    out = check(knute_bin, config)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert any("mqtt.tls.ca" in ln and "not a PEM CA certificate" in ln for ln in lines), lines
    assert any("data directory" in ln and "missing" in ln and "does not exist" in ln
               for ln in lines), lines
    assert any("serial[0].url" in ln and "/dev/ttyKNUTE-none: no such device" in ln
               for ln in lines), lines
    assert lines[-1].endswith("3 problem(s) (gateway gw-check, 2 sources: radio, pf)")
    js = check(knute_bin, config, "--json")
    assert js.returncode == 2 and len(json.loads(js.stdout)["problems"]) == 3


def test_a_config_file_where_the_registry_belongs_is_reported(tmp_path: Path,
                                                              knute_bin: Path) -> None:
    config = write_config(tmp_path)
    text = config.read_text().replace('data_dir = "data"\n',
                                      'data_dir = "data"\nregistry = "../gateway.toml"\n')
    config.write_text(text)
    out = check(knute_bin, config)
    assert out.returncode == 2
    assert "gateway.registry" in out.stderr and "not a knute registry" in out.stderr


def test_online_reaches_the_broker_and_opens_the_sources(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, pty_pair: tuple[int, str]) -> None:
    _master, slave = pty_pair
    modbus = socket.create_server(("127.0.0.1", 0))
    try:
        config = write_config(tmp_path, serial=slave, mqtt_port=mosquitto.port,
                              modbus_port=modbus.getsockname()[1])
        out = check(knute_bin, config, "--online")
        assert out.returncode == 0, out.stderr
        assert f"mqtt 127.0.0.1:{mosquitto.port}: connected" in out.stdout
        assert f"{slave} opens" in out.stdout
        assert "accepts connections" in out.stdout
    finally:
        modbus.close()


def test_online_reports_an_unreachable_broker_and_source(tmp_path: Path,
                                                         knute_bin: Path) -> None:
    config = write_config(tmp_path, mqtt_port=free_port(), modbus_port=free_port())
    offline = check(knute_bin, config)
    assert offline.returncode == 0, offline.stderr          # nothing to see offline
    out = check(knute_bin, config, "--online")
    assert out.returncode == 2
    assert "mqtt 127.0.0.1" in out.stderr and "cannot connect" in out.stderr
    assert "modbus.bus[0] 'plant'" in out.stderr


def test_the_gateway_refuses_a_bad_ca_with_exit_78(tmp_path: Path, knute_bin: Path) -> None:
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_bytes(os.urandom(600))
    sock = f"/tmp/kgc-{os.getpid()}.sock"
    config = write_config(tmp_path, ca=str(bad_ca))
    config.write_text(config.read_text() + f'[status]\nsocket = "{sock}"\n')
    out = subprocess.run([str(knute_bin), "gateway", "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CONFIG == 78
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.tls.ca" in lines[0], out.stderr
    # A configuration error of the file itself is the same exit status.
    config.write_text("[gateway]\nid = 'x'\nbogus = 1\n")
    out = subprocess.run([str(knute_bin), "gateway", "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CONFIG and "gateway.bogus: unknown key" in out.stderr


def test_a_ca_spoilt_while_running_is_one_line_per_attempt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(str(tmp_path / "s.db"), max_bytes=1 << 20, max_age_s=3600.0)
    bad = tmp_path / "spoilt.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    cfg = fast_cfg(free_port(), tls=TlsSettings(ca=str(bad)))
    fwd = Forwarder(spool, cfg, gateway_id="gw-tls", status_provider=dict)
    with caplog.at_level(logging.INFO, logger="knute"):
        fwd.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and fwd.stats().get("reconnects", 0) < 2:
                time.sleep(0.05)
        finally:
            fwd.stop(0.5)
            spool.close()
    tls_lines = [r for r in caplog.records if "cannot set up TLS" in r.getMessage()]
    assert len(tls_lines) >= 2
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

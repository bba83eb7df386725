"""Gateway configuration: the reference example parses, every mistake is one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from knute.gateway import config
from knute.gateway.errors import KnuteError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """
[gateway]
id = "gw1"
[[serial]]
name = "bridge"
url = "tty0"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return str(path)


def test_example_config_parses() -> None:
    cfg = config.load(str(ROOT / "gateway.example.toml"))
    assert cfg.gateway_id == "district-1"
    assert cfg.registry == "/var/lib/knute/registry.db"
    assert [s.name for s in cfg.serial] == ["bridge-north"]
    assert cfg.packet_forwarders[0].port == 1700
    assert cfg.metrics_port == 9108
    mq = cfg.mqtt
    assert (mq.host, mq.port, mq.prefix, mq.use_tls) == ("mqtt.example.org", 8883, "knute", True)


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.registry == str(tmp_path / "registry.db")
    assert cfg.spool == str(tmp_path / "spool.db")
    assert cfg.serial[0].url == str(tmp_path / "tty0")
    assert cfg.dedup_window_s == 0.2 and cfg.counter_reset_below == 16
    assert cfg.mqtt.client_id == "knute-gw1"
    assert cfg.metrics_port is None


@pytest.mark.parametrize("extra, key, problem", [
    ("[mqtt]\nport = 'x'\n", "mqtt.port", "must be an integer"),
    ("[mqtt]\nport = 70000\n", "mqtt.port", "must be 1..65535"),
    ("[mqtt]\nprot = 5\n", "mqtt.prot", "unknown key"),
    ("[mqtt]\nprotocol = '4'\n", "mqtt.protocol", "must be one of"),
    ("[spool]\nfsync = 'sometimes'\n", "spool.fsync", "must be one of"),
    ("[metrics]\nlisten = 'nowhere'\n", "metrics.listen", "HOST:PORT"),
    ("[[packet_forwarder]]\nname = 'pf'\ngateways = ['xyz']\n", "packet_forwarder[0].gateways",
     "16 hex"),
    ("[[serial]]\nname = 'b2'\n", "serial[1].url", "is required"),
    ("[[serial]]\nname = 'bridge'\nurl = 'x'\n", "source name", "used twice"),
    ("[mqtt]\nkeepalive = true\n", "mqtt.keepalive", "must be an integer"),
    ("surprise = 1\n", "surprise", "unknown key"),
])
def test_one_line_errors(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(KnuteError) as err:
        config.load(path)
    text = str(err.value)
    assert text.startswith(path + ": ") and key in text and problem in text
    assert "\n" not in text


def test_gateway_id_required_and_no_sources(tmp_path: Path) -> None:
    with pytest.raises(KnuteError, match=r"gateway\.id: is required"):
        config.load(write(tmp_path, "[gateway]\n"))
    with pytest.raises(KnuteError, match="no sources"):
        config.load(write(tmp_path, "[gateway]\nid = 'a'\n"))
    with pytest.raises(KnuteError, match="not valid TOML"):
        config.load(write(tmp_path, "[gateway\n"))
    with pytest.raises(KnuteError, match="no such file"):
        config.load(str(tmp_path / "missing.toml"))


def test_cli_exit_2_with_one_line(tmp_path: Path, knute_bin: Path) -> None:
    # One line from every command; `gateway run` exits 78 (EX_CONFIG: systemd does not
    # restart it), the others 2.
    path = write(tmp_path, MINIMAL + "[mqtt]\nport = -1\n")
    for action, status in (("run", 78), ("check", 2)):
        out = subprocess.run([str(knute_bin), "gateway", action, "--config", path],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == status
        assert out.stderr.strip().splitlines() == [
            f"knute gateway: {path}: mqtt.port: must be 1..65535, got -1"]

"""What a ``knute`` process imports: only what the command in hand needs.

Gateways, simulators and the tests start ``knute`` thousands of times, and
most of a short command's CPU was its imports: every command's module for the
help listing, AES-CCM and TLS to read a configuration, pyserial and the Semtech
source for a gateway that has neither. Each case runs the real entry point in
a fresh interpreter and lists the modules it ended with; none of the named
heavy ones may be there. (The figures are in the history; no timing here.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from knute.gateway.device_fields import MAX_DEVICE_ID
from knute.protocol import frame

# Third-party packages and knute rooms that no command below needs.
HEAVY = ("paho", "cryptography", "pymodbus", "prometheus_client", "serial", "rich", "cbor2",
         "mpremote", "amqtt", "jsonschema", "knute.tools.bench", "knute.tools.sim",
         "knute.tools.rig", "knute.backend", "knute.protocol.ccm", "knute.gateway.pipeline",
         "knute.gateway.spool", "knute.gateway.daemon")
# ... and to read a configuration (without [mqtt.tls]) or a registry: TLS and MQTT too.
CONFIG_HEAVY = (*HEAVY, "ssl", "knute.gateway.forwarder")

# `knute ARGV` as the console script runs it; then the modules, as JSON, on the last line
# of stderr. A daemon is stopped by SIGTERM from a thread, once its status socket answers.
PROBE = """\
import json, os, signal, sys, threading
from knute.tools.cli import main

argv = sys.argv[2:]
if argv[:2] == ["gateway", "run"]:
    def stop_when_ready():
        from knute.gateway.status import request
        for _ in range(1200):
            try:
                request(sys.argv[1], {"cmd": "status"}, timeout=1.0)
                break
            except (OSError, ValueError):
                threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=stop_when_ready, daemon=True).start()
try:
    status = main(argv)
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_knute(*argv: str, socket: str = "") -> tuple[str, set[str]]:
    """``knute ARGV`` in a fresh interpreter: its stdout and the modules it imported."""
    run = subprocess.run([sys.executable, "-c", PROBE, socket, *argv], capture_output=True,
                         text=True, timeout=120, check=False)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report["status"] in (0, None), run.stderr
    return run.stdout, set(report["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_help_imports_no_command_and_nothing_heavy() -> None:
    out, modules = run_knute("--help")
    assert "devices" in out and "gateway" in out
    assert loaded(modules, (*CONFIG_HEAVY, "knute.tools.cli.devices",
                            "knute.tools.cli.gateway")) == []


def test_devices_help_imports_nothing_heavy() -> None:
    out, modules = run_knute("devices", "list", "--help")
    assert out.startswith("usage: knute devices list")
    assert loaded(modules, CONFIG_HEAVY) == []


def test_devices_add_and_list_read_the_registry_without_crypto_or_mqtt(
        tmp_path: Path) -> None:
    registry = str(tmp_path / "registry.db")
    _, modules = run_knute("devices", "add", "0000002a", "--kind", "water_meter",
                           "--generate-key", "--registry", registry)
    assert loaded(modules, CONFIG_HEAVY) == []
    out, modules = run_knute("devices", "list", "--registry", registry)
    assert out.split()[9] == "0000002a", out
    assert loaded(modules, CONFIG_HEAVY) == []


def test_devices_show_and_import_read_the_registry_without_crypto(tmp_path: Path) -> None:
    # show reads the downlink store too (command names from protocol.downlink, key
    # fingerprints), import a CSV whose keys are in the clear: neither seals or encrypts.
    registry = str(tmp_path / "registry.db")
    csv = tmp_path / "devices.csv"
    csv.write_text("device_id,kind,key\n0000002b,water_meter,00112233445566778899aabbccddeeff\n")
    _, modules = run_knute("devices", "import", str(csv), "--registry", registry)
    assert loaded(modules, CONFIG_HEAVY) == []
    out, modules = run_knute("devices", "show", "0000002b", "--registry", registry)
    assert out.split()[:2] == ["device", "0000002b"], out
    assert loaded(modules, ("cryptography", "paho", "ssl", "knute.gateway.registry_share",
                            "knute.gateway.pipeline", "knute.gateway.spool")) == []


def test_backend_status_reads_the_store_without_mqtt_or_the_schema(tmp_path: Path) -> None:
    # Only `backend run` consumes readings: status, export and retention open the store.
    config = tmp_path / "backend.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "backend.sqlite"}"\n')
    from knute.backend.config import load
    from knute.backend.store import open_store

    open_store(load(str(config))).close()
    out, modules = run_knute("backend", "status", "--config", str(config))
    assert out.startswith("store "), out
    assert loaded(modules, ("paho", "jsonschema", "ssl", "knute.backend.service",
                            "knute.backend.ingest", "knute.backend.web")) == []


def write_config(tmp_path: Path, rest: str = "") -> tuple[Path, str]:
    """A gateway config: one packet forwarder, no TLS, no metrics, no Modbus, no serial."""
    socket = str(tmp_path / "gw.sock")
    config = tmp_path / "gateway.toml"
    config.write_text(f"""[gateway]
id = "light"
data_dir = "{tmp_path}"
drain_timeout_s = 1
[status]
socket = "{socket}"
[mqtt]
host = "127.0.0.1"
port = 1
prefix = "t"
[[packet_forwarder]]
name = "pf"
listen = "127.0.0.1:0"
""" + rest)
    return config, socket


def test_gateway_check_reads_a_config_without_tls_crypto_or_the_spool(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    out, modules = run_knute("gateway", "check", "--config", str(config))
    assert out.startswith(f"{config}: OK"), out
    assert loaded(modules, CONFIG_HEAVY) == []


@pytest.mark.parametrize("downlinks", [True, False])
def test_a_daemon_loads_only_the_parts_its_config_uses(tmp_path: Path,
                                                       downlinks: bool) -> None:
    config, socket = write_config(
        tmp_path, "" if downlinks else "[downlinks]\nenabled = false\n")
    _, modules = run_knute("gateway", "run", "--config", str(config), socket=socket)
    assert "knute.gateway.sources.udp_forwarder" in modules     # it did run its source
    unused = ("pymodbus", "prometheus_client", "serial", "knute.gateway.sources.serial",
              "knute.gateway.sources.modbus", "knute.gateway.metrics", "knute.tools.bench",
              "knute.tools.sim", "knute.tools.rig", "knute.backend")
    assert loaded(modules, unused) == []
    assert ("knute.gateway.downlink_service" in modules) == downlinks


def test_the_device_id_bound_is_the_frame_headers() -> None:
    assert MAX_DEVICE_ID == frame.MAX_DEVICE_ID


def test_a_benchmark_is_imported_only_when_named() -> None:
    out, modules = run_knute("bench", "--help")
    assert "reliability" in out
    assert loaded(modules, ("knute.tools.bench",)) == ["knute.tools.bench"]
    out, modules = run_knute("bench", "plan", "--help")
    assert out.startswith("usage: knute bench plan")
    assert loaded(modules, ("knute.tools.bench",)) == ["knute.tools.bench",
                                                       "knute.tools.bench.plan"]

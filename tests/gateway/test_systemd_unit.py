"""contrib/knute-gateway.service: a config error is not restarted for ever, and the unit
is hardened (issue 11, item 12). ``systemd-analyze`` checks it where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from knute.gateway.errors import EXIT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "knute-gateway.service"
OPERATIONS = ROOT / "docs" / "operations.md"
MAX_EXPOSURE = 2.0     # systemd-analyze security: 0 (locked down) .. 10 (exposed)


def directives() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_a_config_error_stops_the_restart_loop() -> None:
    unit = directives()
    assert unit["Restart"] == ["always"]
    assert unit["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    docs = OPERATIONS.read_text()
    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in docs
    assert f"exit status {EXIT_CONFIG}" in docs


def test_the_unit_carries_the_hardening_it_promises() -> None:
    unit = directives()
    for key, value in (("CapabilityBoundingSet", ""), ("RestrictNamespaces", "true"),
                       ("MemoryDenyWriteExecute", "true"), ("ProtectClock", "true"),
                       ("NoNewPrivileges", "true"), ("ProtectSystem", "strict"),
                       ("DevicePolicy", "closed"), ("SystemCallArchitectures", "native")):
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["MemoryMax"] and unit["MemoryHigh"]
    # Serial radios come and go: the real /dev with a closed device policy, not a
    # private /dev (docs/operations.md says why).
    assert unit["PrivateDevices"] == ["false"]
    assert "char-ttyUSB rw" in unit["DeviceAllow"]
    assert "PrivateDevices" in OPERATIONS.read_text()


def analyze() -> str:
    """The systemd-analyze binary, or a skip where systemd is not installed."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, knute_bin: Path) -> None:
    tool = analyze()
    unit = tmp_path / "knute-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/knute/.venv/bin/knute", str(knute_bin)))
    out = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stderr


def test_systemd_analyze_security_rates_it_ok() -> None:
    tool = analyze()
    out = subprocess.run([tool, "security", "--offline=yes", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out.stdout)
    assert match, out.stdout + out.stderr
    print(f"systemd-analyze security: exposure {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= MAX_EXPOSURE, out.stdout

"""`make mosquitto` installs the broker and its clients (mosquitto_sub for the README's
backend path), and says so in one line when it cannot.

The real target runs in a scratch copy of the Makefile; apt-get is replaced by a
script that records what it was asked to install (APT_GET), so nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch tree with the Makefile, a present and a missing program."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    present = tmp_path / "present"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    return tmp_path


def _fake_apt(tree: Path, status: int) -> Path:
    script = tree / "apt-get"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tree}/apt-calls\nexit {status}\n')
    script.chmod(0o755)
    return script


def _make(tree: Path, *assignments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "mosquitto", *assignments],
                          cwd=tree, capture_output=True, text=True, timeout=60, check=False)


def test_missing_clients_are_installed_beside_the_broker(tree: Path) -> None:
    apt = _fake_apt(tree, 0)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/present", f"MOSQUITTO_SUB={tree}/nothing",
                   f"APT_GET={apt}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("mosquitto: installing mosquitto-clients with apt-get\n"
                             "mosquitto: installed mosquitto-clients\n")
    calls = (tree / "apt-calls").read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].split()[-1] == "mosquitto-clients"
    assert "mosquitto" not in calls[1].split()          # the broker is there already


def test_both_missing_are_installed_in_one_go(tree: Path) -> None:
    apt = _fake_apt(tree, 0)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/nothing", f"MOSQUITTO_SUB={tree}/nothing",
                   f"APT_GET={apt}")
    assert result.returncode == 0
    assert "installing mosquitto mosquitto-clients with apt-get" in result.stdout
    assert (tree / "apt-calls").read_text().splitlines()[1].split()[-2:] == [
        "mosquitto", "mosquitto-clients"]


def test_failed_install_is_one_line_and_not_a_failure(tree: Path) -> None:
    apt = _fake_apt(tree, 100)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/present", f"MOSQUITTO_SUB={tree}/nothing",
                   f"APT_GET={apt}")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[1].startswith("mosquitto: install of mosquitto-clients failed")
    assert "mosquitto_sub" in lines[1]


def test_without_apt_get_it_says_so_in_one_line(tree: Path) -> None:
    result = _make(tree, f"MOSQUITTO_BIN={tree}/present", f"MOSQUITTO_SUB={tree}/nothing",
                   "APT_GET=")
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(
        "mosquitto: mosquitto-clients not installed and cannot install it here")


def test_nothing_to_do_when_both_are_there(tree: Path) -> None:
    apt = _fake_apt(tree, 0)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/present", f"MOSQUITTO_SUB={tree}/present",
                   f"APT_GET={apt}")
    assert result.returncode == 0
    assert result.stdout == ""
    assert not (tree / "apt-calls").exists()

"""`make mosquitto` installs the broker and its clients (mosquitto_sub for the README's
backend path), and says so in one line when it cannot.

The real target runs in a scratch copy of the Makefile; apt-get is replaced by a
script that records what it was asked to install (APT_GET), so nothing is installed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.apt_rig import fake_apt, make_target, scratch_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return scratch_tree(tmp_path)


def _make(tree: Path, *assignments: str) -> subprocess.CompletedProcess[str]:
    return make_target(tree, "mosquitto", *assignments)


def test_missing_clients_are_installed_beside_the_broker(tree: Path) -> None:
    apt = fake_apt(tree, 0)
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
    apt = fake_apt(tree, 0)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/nothing", f"MOSQUITTO_SUB={tree}/nothing",
                   f"APT_GET={apt}")
    assert result.returncode == 0
    assert "installing mosquitto mosquitto-clients with apt-get" in result.stdout
    assert (tree / "apt-calls").read_text().splitlines()[1].split()[-2:] == [
        "mosquitto", "mosquitto-clients"]


def test_failed_install_is_one_line_and_not_a_failure(tree: Path) -> None:
    apt = fake_apt(tree, 100)
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
    apt = fake_apt(tree, 0)
    result = _make(tree, f"MOSQUITTO_BIN={tree}/present", f"MOSQUITTO_SUB={tree}/present",
                   f"APT_GET={apt}")
    assert result.returncode == 0
    assert result.stdout == ""
    assert not (tree / "apt-calls").exists()

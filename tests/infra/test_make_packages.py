"""`make mosquitto`, `make chromium`, `make postgresql` and `make rabbitmq` install the Debian
packages the tests run for real where they are missing, and say so in one line when they cannot.

The real targets run in a scratch copy of the Makefile; apt-get is replaced by a script that
records what it was asked to install (APT_GET), so nothing is installed. Each case names a
target, the variables that make it see its package as present (``{present}``) or missing, the
package it installs and a word of what goes without it.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.infra.apt_rig import fake_apt, make_target, scratch_tree


class Target(NamedTuple):
    name: str
    present: tuple[str, ...]      # assignments under which the package is there
    missing: tuple[str, ...]      # ... and under which it is not
    package: str
    without: str                  # part of the line saying what fails without it


TARGETS = [
    Target("mosquitto", ("MOSQUITTO_BIN={present}", "MOSQUITTO_SUB={present}"),
           ("MOSQUITTO_BIN={present}", "MOSQUITTO_SUB={tree}/nothing"),
           "mosquitto-clients", "mosquitto_sub"),
    Target("chromium", ("CHROMIUM_NAMES={tree}/nothing {present}",),
           ("CHROMIUM_NAMES={tree}/nothing",), "chromium", "browser test"),
    Target("postgresql", ("POSTGRESQL_INITDB={present}",),
           ("POSTGRESQL_INITDB={tree}/nothing/*/initdb",), "postgresql", "PostgreSQL tests"),
    Target("rabbitmq", ("RABBITMQ_SERVER={present}",), ("RABBITMQ_SERVER={tree}/nothing",),
           "rabbitmq-server", "clustered broker"),
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return scratch_tree(tmp_path)


def _make(tree: Path, target: Target, assignments: tuple[str, ...],
          *more: str) -> subprocess.CompletedProcess[str]:
    filled = [a.format(tree=tree, present=tree / "present") for a in assignments]
    return make_target(tree, target.name, *filled, f"APT_LOCK={tree}/apt.lock", *more)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_an_installed_package_is_left_alone(tree: Path, target: Target) -> None:
    apt = fake_apt(tree, 0)
    result = _make(tree, target, target.present, f"APT_GET={apt}")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert not (tree / "apt-calls").exists()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_a_missing_package_is_installed_from_debian(tree: Path, target: Target) -> None:
    apt = fake_apt(tree, 0)
    result = _make(tree, target, target.missing, f"APT_GET={apt}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{target.name}: installing {target.package} with apt-get\n"
                             f"{target.name}: installed {target.package}\n")
    calls = (tree / "apt-calls").read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].split()[0] == "install" and calls[1].split()[-1] == target.package


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_a_failed_install_is_one_line_and_not_a_failure(tree: Path, target: Target) -> None:
    apt = fake_apt(tree, 100)
    result = _make(tree, target, target.missing, f"APT_GET={apt}")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[1].startswith(f"{target.name}: install of {target.package} failed")
    assert target.without in lines[1]


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_without_apt_get_it_says_so_in_one_line(tree: Path, target: Target) -> None:
    result = _make(tree, target, target.missing, "APT_GET=")
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(
        f"{target.name}: {target.package} not installed and cannot install it here")
    assert target.without in result.stdout


def test_the_broker_and_its_clients_are_installed_in_one_go(tree: Path) -> None:
    apt = fake_apt(tree, 0)
    result = _make(tree, TARGETS[0], ("MOSQUITTO_BIN={tree}/nothing",
                                      "MOSQUITTO_SUB={tree}/nothing"), f"APT_GET={apt}")
    assert result.returncode == 0
    assert "installing mosquitto mosquitto-clients with apt-get" in result.stdout
    assert (tree / "apt-calls").read_text().splitlines()[1].split()[-2:] == [
        "mosquitto", "mosquitto-clients"]


def test_installs_take_turns_on_the_lock(tree: Path) -> None:
    # While another install holds the lock, apt-get is not called: `make -j` runs the
    # targets beside each other, and apt and dpkg allow one install at a time.
    apt = fake_apt(tree, 0)
    with (tree / "apt.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # flock(1) in the Makefile takes the same lock
        run = subprocess.Popen(
            ["make", "--no-print-directory", "rabbitmq", f"RABBITMQ_SERVER={tree}/nothing",
             f"APT_GET={apt}", f"APT_LOCK={tree}/apt.lock"],
            cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert run.stdout is not None
        first = run.stdout.readline()           # said before it waits for the lock
        assert first == "rabbitmq: installing rabbitmq-server with apt-get\n"
        with pytest.raises(subprocess.TimeoutExpired):
            run.wait(timeout=1.0)
        assert not (tree / "apt-calls").exists()
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 0 and (first + out).endswith("rabbitmq: installed rabbitmq-server\n")
    assert (tree / "apt-calls").read_text().splitlines()[0] == "update -qq"

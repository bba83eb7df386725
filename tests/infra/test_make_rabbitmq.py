"""`make rabbitmq` installs Debian's rabbitmq-server for the clustered broker cases, and says
so in one line when it cannot.

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
    return make_target(tree, "rabbitmq", *assignments)


def test_an_installed_rabbitmq_is_left_alone(tree: Path) -> None:
    apt = fake_apt(tree, 0)
    result = _make(tree, f"RABBITMQ_SERVER={tree}/present", f"APT_GET={apt}")
    assert result.returncode == 0 and result.stdout == ""
    assert not (tree / "apt-calls").exists()


def test_a_missing_rabbitmq_is_installed_from_debian(tree: Path) -> None:
    apt = fake_apt(tree, 0)
    result = _make(tree, f"RABBITMQ_SERVER={tree}/nothing", f"APT_GET={apt}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("rabbitmq: installing rabbitmq-server with apt-get\n"
                             "rabbitmq: installed\n")
    calls = (tree / "apt-calls").read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].split()[0] == "install" and calls[1].split()[-1] == "rabbitmq-server"


def test_a_failed_install_is_one_line_and_not_a_failure(tree: Path) -> None:
    apt = fake_apt(tree, 100)
    result = _make(tree, f"RABBITMQ_SERVER={tree}/nothing", f"APT_GET={apt}")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[1].startswith("rabbitmq: install failed") and "clustered broker" in lines[1]


def test_without_apt_get_it_says_so_in_one_line(tree: Path) -> None:
    result = _make(tree, f"RABBITMQ_SERVER={tree}/nothing", "APT_GET=")
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("rabbitmq: not installed and cannot install it here")

"""A scratch copy of the Makefile whose apt-get only records what it was asked to install.

Shared by the tests of the targets that install Debian packages where missing
(`make mosquitto`, `make chromium`): nothing is installed, every call is kept.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scratch_tree(tmp_path: Path) -> Path:
    """A tree with the Makefile and a present program (``present``)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    present = tmp_path / "present"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    return tmp_path


def fake_apt(tree: Path, status: int) -> Path:
    """An apt-get that appends its arguments to ``apt-calls`` and exits with ``status``."""
    script = tree / "apt-get"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tree}/apt-calls\nexit {status}\n')
    script.chmod(0o755)
    return script


def make_target(tree: Path, target: str, *assignments: str) -> subprocess.CompletedProcess[str]:
    """Run ``make TARGET`` in the scratch tree with the given variable assignments."""
    return subprocess.run(["make", "--no-print-directory", target, *assignments],
                          cwd=tree, capture_output=True, text=True, timeout=60, check=False)

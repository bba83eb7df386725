"""The pty rig leaves no path behind into a pty number the kernel hands out again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knute.tools.rig.ptys import Pty


def test_a_closed_pty_takes_its_path_with_it(tmp_path: Path) -> None:
    link = tmp_path / "ttyOLD"
    old = Pty(link)
    target = os.readlink(link)
    old.close()
    # The next pty opened anywhere may get the same number (here or in a test
    # running beside this one): the old path must not lead a reopening source to it.
    new = Pty(tmp_path / "ttyNEW")
    try:
        print(f"closed {target}, next pty {os.readlink(tmp_path / 'ttyNEW')}")
        assert not os.path.lexists(link)
        with pytest.raises(FileNotFoundError):
            os.close(os.open(link, os.O_RDWR | os.O_NOCTTY))
    finally:
        new.close()
    assert not os.path.lexists(tmp_path / "ttyNEW")

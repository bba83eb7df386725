"""`knute vdevice --bits`: a virtual board on the 64- or the 32-bit unix port.

The board's word size shows where it matters on a board: sys.maxsize is the
small-int limit (2**31 - 1 on 32 bits; ints above 2**30 are heap objects there).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from knute.tools.rig import upy
from tests.tools.conftest import Mpremote

MAXSIZE = {64: 2**63 - 1, 32: 2**31 - 1}


@pytest.mark.parametrize("bits", [32, 64])
def test_cli_bits_starts_the_board_on_that_build(knute_bin: Path, tmp_path: Path,
                                                 mpremote: Mpremote, bits: int) -> None:
    proc = subprocess.Popen([str(knute_bin), "vdevice", "--bits", str(bits), "--json",
                             "--flash", str(tmp_path), "--for", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["bits"] == bits
        assert info["micropython"] == str(upy.micropython(bits))
        got = mpremote(info["port"], "exec", "import sys; print(sys.maxsize)")
        assert got.stdout == f"{MAXSIZE[bits]}\n", got.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_bits_32_without_the_build_is_one_line(knute_bin: Path, tmp_path: Path) -> None:
    env = {"KNUTE_UPY32": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(knute_bin), "vdevice", "--bits", "32", "--for", "1"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"no 32-bit MicroPython at {tmp_path / 'nowhere'}" in lines[0]

"""A Ctrl-C that leaves the unix port hanging on a lock still stops the virtual board.

The unix port raises KeyboardInterrupt from its SIGINT handler, in the middle of
C code: a Ctrl-C that lands while the interpreter holds its qstr pool's lock
leaves it held, and the traceback that follows waits on it forever (the
deep-sleeping meter's provisioning, which stops the node with a Ctrl-C, failed
so under load). Which lock the interrupt breaks is luck; here main.py takes
the hang on purpose, the same way: a KeyboardInterrupt that ends in a wait on a
lock nobody will release.
"""

from __future__ import annotations

import time
from pathlib import Path

from knute.tools.sim.vdevice import VirtualBoard
from tests.tools.conftest import Mpremote

HANGS_ON_CTRL_C = (
    "import _thread\n"
    "lock = _thread.allocate_lock()\n"
    "lock.acquire()\n"
    "with open('running.txt', 'w') as f:\n    f.write('1')\n"
    "try:\n"
    "    while True:\n"
    "        pass\n"
    "except KeyboardInterrupt:\n"
    "    lock.acquire()\n")


def test_a_board_hung_by_a_ctrl_c_comes_back_as_interrupted(
        tmp_path: Path, mpremote: Mpremote, upy_bits: int) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(HANGS_ON_CTRL_C)
    with VirtualBoard(flash, bits=upy_bits) as vboard:
        deadline = time.monotonic() + 30
        while not (flash / "running.txt").exists():
            assert time.monotonic() < deadline, "main.py did not run at power-on"
            time.sleep(0.05)
        first = vboard.boots
        # mpremote's Ctrl-C, then its raw REPL (it gives up after 10 s of silence).
        got = mpremote(vboard.port, "exec", "print(6 * 7)", timeout=60)
        assert got.returncode == 0, got.stdout + got.stderr
        assert got.stdout == "42\n"
        # Restarted as interrupted, then mpremote's soft reset: main.py did not run again.
        assert vboard.boots == first + 2
        assert vboard.error is None

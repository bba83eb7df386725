"""The room an air node holds for the names' table step (firmware.names_room).

The block must hold the 640-entry table of the build's word size, come back
to the heap the moment the first send clears it (no collection: a stale
pointer on the stack could hold a dropped object), and be None, not a
MemoryError, where the heap has no such block.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc, sys
sys.path.insert(0, ".")
from firmware import names_room
from struct import calcsize

room = names_room.take()
print("words", len(room), calcsize("P"))
gc.collect()
held = gc.mem_free()
room.clear()
print("freed", gc.mem_free() - held)
hog = []
try:
    while True:
        hog.append(bytearray(256))
except MemoryError:
    pass
print("full", names_room.take())
"""


def test_the_room_holds_the_table_and_comes_back_at_once(micropython_bin: Path,
                                                        upy_bits: int) -> None:
    result = subprocess.run([str(micropython_bin), "-X", "heapsize=64k", "-c", SCRIPT],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    words, word = (int(n) for n in lines["words"].split())
    assert word == upy_bits // 8
    table = 640 * (word + 3) + 4 * word     # the 640-entry table and its header
    assert words * word >= table
    # Everything but the list's first block (its four items after clear()) is free
    # again before any collection.
    assert int(lines["freed"]) >= words * word - 16 * (word // 4) * 2, result.stdout
    assert lines["full"] == "None", result.stdout

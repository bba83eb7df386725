"""Node arithmetic across 2**30 on both unix ports, CPython as the oracle.

A 32-bit build keeps ints below 2**30 as small ints and everything above as heap
integers (the 64-bit port only at 2**62), so a value that crosses the boundary
takes another code path in the VM there. tests/firmware/upy_bounds.py computes
the meter index (up to 4,294,967,295 litres), frame fields, the downlink clock in
s and ms and the BME280 compensation; hypothesis draws the cases, most of them
within a few thousand of 2**30, 2**31 or 2**32, and both interpreters must
print the same lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "tests/firmware/upy_bounds.py"
EDGES = (1 << 30, 1 << 31, 1 << 32)
EXAMPLE_CAL = [27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
               75, 359, 0, 373, 50, 30]


def near(edges: tuple[int, ...], lo: int, hi: int, spread: int = 3000) -> Any:
    """Integers in [lo, hi], mostly within ``spread`` of one of ``edges``."""
    around = st.sampled_from(edges).flatmap(
        lambda e: st.integers(max(lo, e - spread), min(hi, e + spread)))
    return st.one_of(around, around, st.integers(lo, hi))


U16 = st.integers(0, 0xFFFF)
S16 = st.integers(-0x8000, 0x7FFF)
S12 = st.integers(-0x800, 0x7FF)
CAL = st.one_of(st.just(EXAMPLE_CAL), st.tuples(
    st.integers(1, 0xFFFF), S16, S16, st.integers(1, 0xFFFF), S16, S16, S16, S16, S16, S16,
    S16, S16, st.integers(0, 255), S16, st.integers(0, 255), S12, S12,
    st.integers(-128, 127)).map(list))

INDEX_ML = near((*(e * k for e in EDGES for k in (1, 1000)), 0xFFFFFFFF * 1000),
                0, 0xFFFFFFFF * 1000 + 10**9)
WATER = st.tuples(
    st.just("water"), st.sampled_from([1, 10, 1000, 100000, 10000000]), INDEX_ML,
    st.integers(400000, 600000),
    st.lists(st.tuples(st.integers(0, 7000), st.integers(0, 2000), st.integers(0, 20)),
             min_size=1, max_size=4).map(lambda ps: [list(p) for p in sorted(ps)]))
FRAME = st.tuples(
    st.just("frame"), near((1 << 30, 1 << 31, 0xFFFFFFFF), 0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFF), near((1 << 30, 1 << 31, 0xFFFFFFFF), 0, 0xFFFFFFFF),
    near((1 << 30, 1 << 31, 1700000000), 0, 0xFFFFFFFF))
CLOCK = st.tuples(
    st.just("clock"), near((1 << 30, 1 << 31, 1700000000), 0, 0xFFFFFFFF),
    st.integers(0, 999), near(EDGES, 0, 1 << 40), near(EDGES, 0, 1 << 40))
BME = st.tuples(st.just("bme"), CAL, st.integers(0, 0xFFFFF), st.integers(0, 0xFFFFF),
                st.integers(0, 0xFFFF))
CASES = st.lists(st.one_of(WATER, FRAME, CLOCK, BME), min_size=30, max_size=60)

# The edges themselves, always.
FIXED: list[list[Any]] = [
    ["water", 1000, (1 << 30) - 1000, 472224, [[10, 1, 0], [20, 1, 0]]],
    ["water", 1000, 0xFFFFFFFF * 1000 - 500, 472224, [[10, 1, 0], [4000, 2, 0]]],
    ["water", 10000000, (1 << 32) * 1000, 472224, [[5, 0, 3]]],
    ["frame", 0xFFFFFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF],
    ["frame", 1 << 30, (1 << 24) - 1, (1 << 30) - 1, (1 << 31) - 1],
    ["clock", 1 << 31, 999, (1 << 30) - 1, 1 << 30],
    ["clock", 1700006400, 0, 1 << 32, (1 << 32) + 1],
    ["bme", EXAMPLE_CAL, 519888, 415148, 30000],
    ["bme", EXAMPLE_CAL, 0xFFFFF, 0, 0xFFFF],
    # The registers' 'skipped' patterns: the values come back as None on both runtimes.
    ["bme", EXAMPLE_CAL, 519888, 0x80000, 0x8000],
    ["bme", EXAMPLE_CAL, 0x80000, 415148, 30000],
]


def _run(exe: str, cases_path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, SCRIPT, cases_path], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def _same_on_both(micropython_bin: Path, cases: list[Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(cases, handle)
    try:
        cpy = _run(sys.executable, handle.name)
        upy = _run(str(micropython_bin), handle.name)
    finally:
        Path(handle.name).unlink()
    assert cpy.returncode == 0, cpy.stdout + cpy.stderr
    assert upy.returncode == 0, upy.stdout + upy.stderr
    assert upy.stdout.splitlines() == cpy.stdout.splitlines()
    assert cpy.stdout.splitlines()[-1] == f"done {len(cases)}"


def test_edges_compute_the_same(micropython_bin: Path) -> None:
    _same_on_both(micropython_bin, FIXED)


# Few examples of many cases each: every example is two interpreter processes.
@settings(max_examples=8)
@given(cases=CASES)
def test_values_around_the_edges_compute_the_same(micropython_bin: Path,
                                                   cases: list[Any]) -> None:
    _same_on_both(micropython_bin, [list(case) for case in cases])

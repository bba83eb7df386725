"""Power cuts at random moments while a node applies downlinks (kill -9 on the unix port).

For each of config apply, two-phase key rotation and module-set switch, a
node process (tests/firmware/upy_downlink_cut.py) applies the downlinks and
is killed with SIGKILL at a moment drawn uniformly over the time a full apply
takes; the next "boot" (the same script in check mode) must find the old
state or the new one, never a mix: the config section whole, a key both sides
hold, both probe modules of the same set. 10 runs per case in the normal
tier, 100 in the slow one; each case prints how the runs ended.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from knute.protocol import downlink as dl

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "firmware" / "upy_downlink_cut.py"
DEVICE = 0x1234
K1 = bytes(range(16))
K2 = bytes(range(100, 116))
OLD_WATER = {"sends_per_day": 4, "profile_len": 6}
NEW_VALUES = {1: 2, 2: 12, 3: 5000, 4: 12}
NEW_WATER = {"sends_per_day": 2, "profile_len": 12, "burst_lph": 5000, "leak_hours": 12}


def _frames(case: str) -> list[bytes]:
    if case == "config":
        return [dl.encode(DEVICE, 1, [dl.config(1, NEW_VALUES)], K1)]
    if case == "rekey":
        return [dl.encode(DEVICE, 1, [dl.rekey(1, 1, K2)], K1),
                dl.encode(DEVICE, 2, [dl.rekey_done(2, 1)], K2)]
    data = dl.bundle([("firmware/probe_a.py", b"VERSION = 2\n"),
                      ("protocol/probe_b.py", b"VERSION = 2\n")])
    out = [dl.encode(DEVICE, 1, [dl.upd_begin(1, 1, len(data))], K1)]
    step = dl.chunk_capacity(9)
    for n, offset in enumerate(range(0, len(data), step)):
        out.append(dl.encode(DEVICE, 2 + n, [dl.upd_chunk(2, 1, offset,
                                                          data[offset:offset + step])], K1))
    out.append(dl.encode(DEVICE, len(out) + 1, [dl.upd_switch(3, 1)], K1))
    return out


def _template(base: Path, flash_lib: Path, case: str) -> Path:
    node = base / "template"
    shutil.copytree(flash_lib, node / "lib")
    (node / "lib" / "firmware" / "probe_a.py").write_text("VERSION = 1\n")
    (node / "lib" / "protocol" / "probe_b.py").write_text("VERSION = 1\n")
    config = {"role": "water_meter", "device_id": DEVICE, "key": K1.hex(),
              "link": {"type": "uart"}, "water": dict(OLD_WATER)}
    (node / "config.json").write_text(json.dumps(config))
    (node / "frames.hex").write_text("".join(f.hex() + "\n" for f in _frames(case)))
    shutil.copy(SCRIPT, node / "cut.py")
    return node


def _apply(upy: Path, node: Path, kill_after: float | None) -> tuple[bool, float]:
    """Run the apply; SIGKILL it `kill_after` s after "ready". (finished, seconds after ready)."""
    proc = subprocess.Popen([str(upy), "cut.py", "apply"], cwd=node, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + (proc.stderr.read() if proc.stderr else "")
    start = time.monotonic()
    if kill_after is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "rejected" not in out, out + err
        return True, time.monotonic() - start
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        return False, kill_after
    finally:
        proc.communicate(timeout=30)
    return True, time.monotonic() - start


def _check(upy: Path, node: Path) -> dict[str, Any]:
    result = subprocess.run([str(upy), "cut.py", "check"], cwd=node, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    state: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return state


def _outcome(case: str, state: dict[str, Any]) -> str:
    """"old" or "new" (or "pending" for a rotation between its phases); fails on a mix."""
    if case == "config":
        assert state["water"] in (OLD_WATER, NEW_WATER), state
        if state["water"] == NEW_WATER:
            assert state["dcnt"] == {"last": 1}, state   # counter stored before the apply
        return "old" if state["water"] == OLD_WATER else "new"
    if case == "rekey":
        keys = (state["key"], state["key_next"], state["key_no"])
        assert keys in ((K1.hex(), None, 0), (K1.hex(), K2.hex(), 0), (K2.hex(), None, 1)), keys
        return {K1.hex(): "old", K2.hex(): "new"}[state["key"]] if state["key_next"] is None \
            else "pending"
    assert state["modules"] in ([1, 1], [2, 2]), state
    assert (state["active"] is None) == (state["modules"] == [1, 1]), state
    return "old" if state["modules"] == [1, 1] else "new"


def _cuts(case: str, runs: int, upy: Path, flash_lib: Path, base: Path) -> Counter[str]:
    template = _template(base, flash_lib, case)
    full = base / "full"
    shutil.copytree(template, full)
    finished, took = _apply(upy, full, None)
    assert finished and _outcome(case, _check(upy, full)) == "new"
    rng = random.Random(f"{case}-{runs}")
    seen: Counter[str] = Counter()
    for run in range(runs):
        node = base / f"run{run}"
        shutil.copytree(template, node)
        done, _ = _apply(upy, node, rng.uniform(0, took * 1.2))
        seen[_outcome(case, _check(upy, node)) + ("" if not done else " (finished)")] += 1
        shutil.rmtree(node)
    print(f"{case}: {runs} cuts over {took * 1000:.0f} ms of apply: {dict(seen)}")
    return seen


CASES = ("config", "rekey", "modules")


@pytest.mark.parametrize("case", CASES)
def test_a_cut_leaves_old_or_new_state(case: str, micropython_bin: Path, flash_lib: Path,
                                       tmp_path: Path) -> None:
    _cuts(case, 10, micropython_bin, flash_lib, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_hundred_cuts_leave_old_or_new_state(case: str, micropython_bin: Path,
                                               flash_lib: Path, tmp_path: Path) -> None:
    seen = _cuts(case, 100, micropython_bin, flash_lib, tmp_path)
    # Uniform cut times over the whole apply: both ends must have been met.
    assert seen["old"] > 0 and (seen["new"] + seen["new (finished)"]) > 0, seen

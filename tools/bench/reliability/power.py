"""Firmware power cuts: kill -9 of the unix-port node at random points of its writes."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from knute.tools.bench.reliability.harness import (
    make_dir,
)
from knute.tools.bench.reliability.results import (
    CaseResult,
)

# ---------------------------------------------------------------- firmware power cuts


def case_firmware_power_cut(workdir: Path, *, cuts: int = 5, seed: int = 10,
                            bits: int = 64) -> CaseResult:
    """kill -9 of the unix-port firmware at random points of its counter and index
    writes, ``cuts`` times: never a reused frame counter, the index never goes back.

    ``bits`` picks the unix port: 64, or 32 (the build that stands for a board,
    tools/rig/upy.py), where the node runs in the 48 KiB heap a board role must fit.

    Uses the rig's firmware node (tools/rig/node.py): writes pause
    halfway (``pause_writes_ms``) and are traced, so a cut lands before, inside
    or after a write at random.
    """
    from knute.tools.rig.flash import compile_lib
    from knute.tools.rig.node import HOUR_T0, KEY, BenchNode, pulse_lines, water_config
    from knute.tools.rig.upy import micropython as upy_binary

    result = CaseResult("firmware_power_cut", runs=cuts)
    rng = random.Random(seed)
    lib = compile_lib(make_dir(workdir / "lib"))
    micropython = upy_binary(bits)
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["fcnt_block"] = 2
    cfg["jitter_s"] = 0
    cfg["power"] = {"boot_loop_limit": 1000}
    cfg["bench"].update({"trace_writes": True, "pause_writes_ms": 60, "time_scale": 3600 * 4,
                         "stop_after_s": 400 * 3600})
    node = BenchNode(workdir / "node", micropython, lib, cfg,
                     heap="48k" if bits == 32 else "72k")
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [30] * 420, 6))
    writes = re.compile(r"knute: writing (fcnt|meter)")
    in_write = 0
    try:
        for _ in range(cuts):
            seen = len([ln for ln in node.lines if writes.search(ln)])
            node.start()
            node.wait_line(r"knute: writing (fcnt|meter)", count=seen + rng.randint(1, 4))
            time.sleep(rng.uniform(0.0, 0.09))
            if node.proc is not None and node.proc.poll() is not None:
                result.problems.append("the node exited before its power cut:\n"
                                       + "\n".join(node.lines[-10:]))
                break
            node.kill9()
            if list((node.dir / "state").glob("*.tmp")):
                in_write += 1
        node.start()
        time.sleep(0.5)
        node.kill9()
        frames = [frame for rtype, frame in node.records() if rtype == 1]
    finally:
        node.close()
    from knute.protocol import frame as pframe

    decoded = [pframe.decode(buf, KEY) for buf in frames]
    fcnts = [d["fcnt"] for d in decoded]
    indexes = [d["values"]["index"] for d in decoded]
    reused = len(fcnts) - len(set(fcnts))
    result.sent = len(fcnts)
    result.accepted = len(set(fcnts))
    result.delivered = len(set(fcnts))
    result.duplicates = reused
    result.notes.update({"cuts_inside_a_write": in_write, "frames": len(fcnts),
                         "recovered_writes": node.console().count("a write was cut short"),
                         "safe_mode": node.console().count("SAFE MODE")})
    if reused or fcnts != sorted(fcnts):
        result.problems.append(f"frame counter reused or out of order: {fcnts}")
    if indexes != sorted(indexes):
        result.problems.append(f"the index went back: {indexes}")
    if "Traceback" in node.console():
        result.crashes += 1
        result.problems.append("a traceback on the node console")
    if len(fcnts) < cuts // 2:
        result.problems.append(f"only {len(fcnts)} frames in {cuts} power cycles")
    return result

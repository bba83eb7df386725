"""Damage cases: spool and registry files corrupted on disk, a full disk."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from knute.gateway.errors import KnuteError
from knute.tools.bench.reliability.harness import (
    rig,
)
from knute.tools.bench.reliability.results import (
    WAIT_S,
    CaseResult,
    key_leaks,
    spool_problems,
)
from knute.tools.rig.wait import wait_for


def _truncate_middle(path: str, keep: float) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


def scribble(path: str, at: float, n: int, seed: int) -> None:
    rng = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(int(size * at))
        fh.write(rng.randbytes(n))


def scribble_table(path: str, table: str, n: int, seed: int) -> None:
    """Write ``n`` random bytes into the middle of the last leaf page of ``table``.

    A torn sector lands in one table's page: aiming at the table by its pages (SQLite's
    dbstat) keeps the damage where the case means it however the file's other tables grow.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = [int(row[0]) for row in db.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,))]
    finally:
        db.close()
    if not pages:
        raise RuntimeError(f"{path}: table {table} has no leaf page")
    offset = (pages[-1] - 1) * page_size + (page_size - n) // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(random.Random(seed).randbytes(n))


def case_corrupt_files(workdir: Path, *, seed: int = 5) -> CaseResult:
    """A truncated spool and a scribbled-over registry at start-up.

    The gateway must start, say what happened, move the broken file aside and
    keep what can be read; what it salvaged is then delivered. ``lost`` counts
    salvaged rows not delivered; rows destroyed by the damage itself are in
    the notes (``destroyed``).
    """
    result = CaseResult("corrupt_files", runs=2)
    with rig(workdir, meters=40, air=10, rate=300.0, seed=seed) as r:
        r.link.set_mode("down")
        r.gw.start()
        r.fleet.start()
        wait_for(lambda: r.gw.status()["spool"]["depth"] >= 1500, 60, "a spool backlog")
        r.fleet.stop()
        time.sleep(0.5)
        before = r.gw.status()["spool"]["depth"]
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly")
        # 1. the spool loses its tail (a torn copy, a full disk during a restore)
        _truncate_middle(r.gw.spool_path, 0.6)
        # 2. the registry gets a torn 512-byte sector in its device table
        scribble_table(r.gw.registry_path, "devices", 512, seed)
        r.gw.start()
        log = r.gw.log_text()
        st = r.gw.status()
        aside = [p.name for p in Path(r.gw.spool_path).parent.iterdir() if ".corrupt-" in p.name]
        if not any(n.startswith("spool.db.corrupt-") for n in aside):
            result.problems.append("the corrupt spool was not moved aside")
        if not any(n.startswith("registry.db.corrupt-") for n in aside):
            result.problems.append("the corrupt registry was not moved aside")
        if "corrupt" not in log:
            result.problems.append("the gateway did not say the files were corrupt")
        salvaged = int(st["spool"]["depth"])
        devices = int(st["devices"])
        result.notes.update({"spool_rows_before": before, "salvaged_rows": salvaged,
                             "destroyed": before - salvaged,
                             "devices_before": len(r.fleet.devices),
                             "devices_salvaged": devices})
        if devices == 0:
            result.problems.append("no device salvaged from the registry")
        r.link.set_mode("relay")
        try:
            wait_for(lambda: r.gw.status()["spool"]["depth"] == 0, WAIT_S, "salvage delivered")
        except KnuteError as exc:
            result.problems.append(str(exc))
        r.backend.quiet(0.5)
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly after the salvage")
        result.sent = r.fleet.sent
        result.accepted = before
        result.delivered = r.backend.delivered()
        result.lost = max(0, salvaged - result.delivered)
        result.duplicates = r.backend.duplicates()
        result.crashes = r.gw.crashes
        forged = r.backend.ids() - r.fleet.valid_ids
        if forged:
            result.problems.append(f"{len(forged)} readings never sent validly")
        result.problems += key_leaks({"gateway log": r.gw.log_text()}, r.fleet.keys)
    return result


@contextlib.contextmanager
def small_filesystem(size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted on a new directory (root only)."""
    mnt = Path(tempfile.mkdtemp(prefix="knute-full-"))
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs",
                          str(mnt)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        mnt.rmdir()
        raise KnuteError(f"cannot mount a small tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def case_disk_full(workdir: Path, *, free_kb: int = 1024, overfill: float = 2.0,
                   rate: float = 800.0, seed: int = 6) -> CaseResult:
    """The spool's file system fills up while the broker is away.

    The spool lives on a small tmpfs, its configured max_mb far above the
    disk; once the gateway runs, a filler file leaves ``free_kb`` free (the
    disk also fills with other files). The broker link is down; the fleet
    sends until about ``overfill`` times what fits was offered. The gateway
    must keep running, evict by its policy (oldest routine first), count the
    evictions, keep the file intact, and deliver what it kept.
    """
    from knute.gateway.spool_bounds import RESERVE_BYTES

    result = CaseResult("disk_full", runs=1)
    size_kb = free_kb + RESERVE_BYTES // 1024 + 1024
    with small_filesystem(size_kb) as mnt, \
            rig(workdir, rate=rate, seed=seed, spool_path=str(mnt / "spool.db"),
                spool_max_mb=1024) as r:
        r.link.set_mode("down")
        r.gw.start()
        filler = shutil.disk_usage(mnt).free - free_kb * 1024
        with open(mnt / "other-files", "wb") as fh:
            fh.write(b"\xff" * max(0, filler))
        r.fleet.start()
        # About 300 bytes per stored row (JSON reading, topic, SQLite overhead).
        target = int(free_kb * 1024 / 300 * overfill)
        wait_for(lambda: r.fleet.sent_valid >= target or not r.gw.running, WAIT_S,
                 f"{target} frames offered")
        r.fleet.stop()
        time.sleep(1.0)
        if not r.gw.check():
            result.problems.append("gateway died when the disk filled:\n" + r.gw.log_tail())
            r.finish(result)
            return result
        st = r.gw.status()
        result.notes["spool_errors"] = st["totals"].get("spool_errors", 0)
        result.notes["evicted_at_full"] = st["spool"]["evicted_total"]
        result.notes["depth_at_full"] = st["spool"]["depth"]
        df = shutil.disk_usage(mnt)
        result.notes["disk_free_kb"] = df.free // 1024
        if not st["spool"]["evicted_total"]:
            result.problems.append("the disk filled but nothing was evicted")
        # Start over on the same full disk: the file must open and be consistent.
        if r.gw.stop() != 0:
            result.problems.append("gateway did not stop cleanly on a full disk")
        result.problems += spool_problems(r.gw.spool_path)
        r.gw.start()
        r.fleet.start()
        time.sleep(1.0)
        r.drain(result)
        if "evicted" not in r.gw.log_text():
            result.problems.append("evictions were not logged")
    return result

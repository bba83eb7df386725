"""Processes that open a new registry at the same moment (the gateway starting while
``knute provision`` registers a node) all get a sound registry."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from knute.gateway.registry import SCHEMA_VERSION, Registry

OPENERS = 6
ROUNDS = 8


def _open(path: str, barrier: multiprocessing.synchronize.Barrier, n: int,
          errors: multiprocessing.queues.Queue[str]) -> None:
    barrier.wait()
    try:
        reg = Registry(path)
        try:
            reg.add(n + 1, "water_meter", bytes(16))
        finally:
            reg.close()
    except Exception as exc:  # reported to the test, which fails on it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_opens_create_one_registry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_no in range(ROUNDS):
        path = str(tmp_path / f"registry-{round_no}.db")
        barrier = ctx.Barrier(OPENERS)
        errors: multiprocessing.queues.Queue[str] = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, n, errors))
                 for n in range(OPENERS)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        problems = []
        while not errors.empty():
            problems.append(errors.get())
        assert problems == [], problems
        reg = Registry(path)
        try:
            assert reg.version == SCHEMA_VERSION
            assert len(reg) == OPENERS
        finally:
            reg.close()

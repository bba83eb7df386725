"""The downlink counter across processes: two takers on one registry, and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from knute.gateway.downlinks import DownlinkStore
from knute.gateway.registry import Registry

DEV = 0x1234
TAKER = """
import sys
from knute.gateway.downlinks import DownlinkStore
store = DownlinkStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    print(store.take_counter(0x1234), flush=True)
"""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _registry(tmp_path: object) -> str:
    path = os.path.join(str(tmp_path), "registry.db")
    reg = Registry(path)
    reg.add(DEV, "water_meter", bytes(16))
    reg.close()
    DownlinkStore(path).close()
    return path


def _taker(path: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", TAKER, path, str(count)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def test_two_processes_never_take_the_same_counter(tmp_path: object) -> None:
    path = _registry(tmp_path)
    procs = [_taker(path, 150), _taker(path, 150)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    values = [int(v) for out in outs for v in out]
    print(f"process A took {len(outs[0])}, process B {len(outs[1])}")
    assert len(values) == len(set(values)) == 300
    assert sorted(values) == list(range(300))
    for out in outs:                       # each process sees its own values increase
        mine = [int(v) for v in out]
        assert mine == sorted(mine)


def test_a_counter_printed_before_kill_9_is_never_taken_again(tmp_path: object) -> None:
    path = _registry(tmp_path)
    proc = _taker(path, 1_000_000)
    assert proc.stdout is not None
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < 40 and time.monotonic() < deadline:
        seen.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(seen) >= 40
    store = DownlinkStore(path)
    after = store.take_counter(DEV)
    store.close()
    print(f"last printed {seen[-1]}, first after kill -9 {after}")
    assert after is not None and after > seen[-1]

"""kill -9 of a process that accepts frames: nothing it reported as accepted is lost.

The child accepts frames through AcceptBatcher and prints each committed batch
(on_commit runs after the commit returned). The test reads those lines, kills
the child with SIGKILL at a random moment, reopens the spool and checks that
every reported frame is there, that rows and replay counters agree (one
transaction), and that the next child carries on from the counters.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from knute.gateway.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 8

CHILD = """
import random, sys, time
from knute.gateway.spool import Accepted, AcceptBatcher, Spool

DEVICES = int(sys.argv[3])
spool = Spool(sys.argv[1], max_bytes=10**9, max_age_s=10**9, fsync="full")
last = spool.counters()
fcnt = {d: last.get(d, -1) + 1 for d in range(DEVICES)}

def on_commit(batch):
    sys.stdout.write(" ".join(f"{a.device_id}:{a.fcnt}" for a in batch) + "\\n")
    sys.stdout.flush()

batcher = AcceptBatcher(spool, window_s=0.005, max_frames=int(sys.argv[2]),
                        on_commit=on_commit)
batcher.start()
print("ready", flush=True)
while True:
    d = random.randrange(DEVICES)
    batcher.add(Accepted(device_id=d, fcnt=fcnt[d], kind="water_meter",
                         topic=f"knute/water_meter/{d:08x}/up",
                         payload=str(fcnt[d]).encode() + b" " * random.randrange(200),
                         alarm=False, received_at=time.time()))
    fcnt[d] += 1
    if random.random() < 0.01:
        time.sleep(0.001)
"""


def run_and_kill(db: Path, max_frames: int, run_s: float) -> set[tuple[int, int]]:
    """Start a child, collect what it reports as accepted, SIGKILL it; return the reports.

    The kill lands ``run_s`` after the child is ready, or at its first reported batch
    if that comes later.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(max_frames), str(DEVICES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    started = None
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            # Killed run_s after it got ready, and never before its first reported
            # batch: on a loaded machine the first fsync'd commit can take longer
            # than run_s, and a child killed before it proves nothing.
            if (started is not None and time.monotonic() - started >= run_s
                    and buf.count(b"\n") > 1):
                break
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                if started is None and b"ready\n" in buf:
                    started = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Lines already written before the kill are still in the pipe.
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert started is not None, f"child never got ready: {err}"
    assert proc.returncode == -signal.SIGKILL, err
    reported = set()
    complete = buf[:buf.rfind(b"\n") + 1].decode().splitlines()
    for line in complete:
        if line == "ready":
            continue
        for pair in line.split():
            device, fcnt = pair.split(":")
            reported.add((int(device), int(fcnt)))
    return reported


def test_kill_9_loses_nothing_accepted(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    rng = random.Random(1234)
    reported: set[tuple[int, int]] = set()
    for round_no in range(4):
        new = run_and_kill(db, max_frames=rng.choice([1, 16, 64, 256]),
                           run_s=rng.uniform(0.3, 0.9))
        assert new, f"round {round_no}: the child reported no accepted frame"
        assert not new & reported, "a counter was accepted twice across a kill"
        reported |= new
        spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
        rows = spool.pending(10**7)
        present = {(r.device_id, r.fcnt) for r in rows}
        counters = spool.counters()
        spool.close()
        missing = reported - present
        assert not missing, f"round {round_no}: {len(missing)} accepted frames lost"
        # Rows and counters were committed together: each device has exactly the
        # frames 0..counter, in order.
        for device in range(DEVICES):
            fcnts = [r.fcnt for r in rows if r.device_id == device]
            assert fcnts == list(range(counters.get(device, -1) + 1))

"""A hypothesis state machine over the spool: accept, fetch, ack, evict, reopen, time passes.

Invariants after every step:
- nothing accepted is lost: every accepted row is in the spool, was acknowledged,
  or is counted as evicted (and the counts add up exactly);
- rows come out in acceptance order, so per device in frame-counter order;
- alarms are evicted last: a size eviction of an alarm leaves no routine row,
  and routine rows evicted for size are older than every routine row kept;
- the byte bound holds, no row is older than the age bound after an accept;
- replay counters are the highest accepted counter per device, whatever was
  acknowledged or evicted.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from knute.gateway.spool import Accepted, Spool, row_size
from tests.budget import examples

MAX_BYTES = 4000
MAX_AGE_S = 500.0
TOPIC = "knute/water_meter/{:08x}/up"


class SpoolMachine(RuleBasedStateMachine):
    """Drives one spool file against a model of what must be in it."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="knute-spool-sm-"))
        self.now = 1_000_000.0
        self.spool = self._open()
        self.next_fcnt: dict[int, int] = {}
        self.accepted: dict[tuple[int, int], bool] = {}   # (device, fcnt) -> alarm
        self.acked: set[tuple[int, int]] = set()
        self.max_fcnt: dict[int, int] = {}
        self.inflight: dict[int, tuple[int, int]] = {}     # row id -> (device, fcnt)
        self.cursor = 0
        self.previous_present: dict[int, tuple[int, int, bool]] = {}
        self.previous_stats = self.spool.stats()

    def _open(self) -> Spool:
        return Spool(str(self.dir / "s.db"), max_bytes=MAX_BYTES, max_age_s=MAX_AGE_S,
                     fsync="normal", clock=lambda: self.now)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def present(self) -> dict[int, tuple[int, int, bool]]:
        return {r.row_id: (r.device_id, r.fcnt, r.alarm) for r in self.spool.pending(10**6)}

    @rule(frames=st.lists(st.tuples(st.integers(1, 4), st.booleans(),
                                    st.integers(10, 700), st.integers(0, 100)),
                          min_size=1, max_size=12))
    def accept(self, frames: list[tuple[int, bool, int, int]]) -> None:
        before = self.present()
        batch = []
        for device, alarm, size, age in frames:
            fcnt = self.next_fcnt.get(device, 0)
            self.next_fcnt[device] = fcnt + 1
            batch.append(Accepted(device_id=device, fcnt=fcnt, kind="water_meter",
                                  topic=TOPIC.format(device), payload=b"p" * size,
                                  alarm=alarm, received_at=self.now - age))
            self.accepted[(device, fcnt)] = alarm
            self.max_fcnt[device] = fcnt
        old_stats = self.spool.stats()
        self.spool.accept(batch)
        after = self.present()
        stats = self.spool.stats()
        size_alarm = stats["evicted_size_alarm"] - old_stats["evicted_size_alarm"]
        if size_alarm:
            assert not any(not alarm for _d, _f, alarm in after.values())
        gone_routine = [rid for rid in before if rid not in after and not before[rid][2]]
        kept_routine = [rid for rid, row in after.items() if not row[2]]
        if gone_routine and kept_routine and not (stats["evicted_age_routine"]
                                                  - old_stats["evicted_age_routine"]):
            assert max(gone_routine) < min(kept_routine)
        assert stats["bytes"] <= MAX_BYTES
        assert all(r.received_at >= self.now - MAX_AGE_S - 1.0
                   for r in self.spool.pending(10**6))

    @rule(limit=st.integers(1, 20))
    def fetch(self, limit: int) -> None:
        rows = self.spool.pending(limit, self.cursor)
        for row in rows:
            self.inflight[row.row_id] = (row.device_id, row.fcnt)
        if rows:
            self.cursor = rows[-1].row_id

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.inflight)), min_size=1,
                                 unique=True))
        present = self.present()
        deleted = self.spool.ack(ids)
        assert deleted == sum(1 for rid in ids if rid in present)
        for rid in ids:
            if rid in present:
                self.acked.add(self.inflight[rid])
            del self.inflight[rid]

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()
        self.inflight.clear()
        self.cursor = 0

    @rule(seconds=st.floats(0.5, 400.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def nothing_lost_unless_counted(self) -> None:
        present = self.present()
        keys = {(d, f) for d, f, _a in present.values()}
        assert len(keys) == len(present)
        assert keys <= set(self.accepted)
        assert not keys & self.acked
        stats = self.spool.stats()
        missing = set(self.accepted) - keys - self.acked
        assert len(missing) == stats["evicted_total"]
        assert stats["evicted_total"] == (stats["evicted_size_routine"]
                                          + stats["evicted_size_alarm"]
                                          + stats["evicted_age_routine"]
                                          + stats["evicted_age_alarm"])
        alarms_missing = sum(1 for key in missing if self.accepted[key])
        assert alarms_missing == stats["evicted_size_alarm"] + stats["evicted_age_alarm"]
        assert stats["depth"] == len(present)
        assert stats["accepted_total"] == len(self.accepted)
        assert stats["acked_total"] == len(self.acked)
        assert stats["bytes"] == sum(row_size(TOPIC.format(r.device_id), r.payload)
                                     for r in self.spool.pending(10**6))

    @invariant()
    def order_per_device(self) -> None:
        ids = sorted(self.present())
        assert [r.row_id for r in self.spool.pending(10**6)] == ids
        last: dict[int, int] = {}
        for row in self.spool.pending(10**6):
            assert row.fcnt > last.get(row.device_id, -1)
            last[row.device_id] = row.fcnt

    @invariant()
    def replay_counters(self) -> None:
        assert self.spool.counters() == self.max_fcnt


# Five rules (accept, fetch, ack, reopen, time passes) over 30 steps: 20 fixed
# runs meet each pair of rules several times. Every step works on a real SQLite
# file, so runs are costly (60 were 7 s of CPU). Nightly: 300.
SpoolMachine.TestCase.settings = settings(max_examples=examples(ci=20, nightly=300),
                                          stateful_step_count=30, deadline=None)
TestSpoolMachine = SpoolMachine.TestCase

"""Spool.ack deletes acknowledged rows by runs of ids: exactly the rows an IN (...) would."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from knute.gateway.spool_drain import id_runs
from tests.gateway.test_spool import item, open_spool


@given(st.lists(st.integers(1, 300), max_size=80))
def test_runs_cover_exactly_the_ids(ids: list[int]) -> None:
    runs = id_runs(ids)
    covered = [i for first, last in runs for i in range(first, last + 1)]
    assert covered == sorted(set(ids))
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(runs))   # not adjacent


def test_ack_with_gaps_deletes_only_the_acknowledged_rows(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    try:
        spool.accept([item(1, fcnt) for fcnt in range(20)])
        ids = [row.row_id for row in spool.pending(100)]
        acked = ids[0:5] + ids[7:8] + ids[10:15] + ids[19:20]
        before = spool.stats()
        # acknowledged twice and ids of no row are ignored
        assert spool.ack(acked + ids[0:2] + [ids[-1] + 5]) == len(acked)
        left = [row.row_id for row in spool.pending(100)]
        assert left == [i for i in ids if i not in acked]
        after = spool.stats()
        assert after["depth"] == 20 - len(acked)
        assert after["acked_total"] == before["acked_total"] + len(acked)
        assert after["bytes"] < before["bytes"]
        assert spool.ack(left) == len(left)
        assert spool.depth == 0 and spool.stats()["bytes"] == 0
    finally:
        spool.close()

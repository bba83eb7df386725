"""Under pytest-xdist the longest files head the workers' shares (tests/conftest.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.conftest import LONG_FIRST, _long_first


def _items(ids: list[str], process: frozenset[str] = frozenset()) -> list[pytest.Item]:
    """Stand-ins for the collected items ``ids``; those in ``process`` carry the mark."""
    return cast(list[pytest.Item], [
        SimpleNamespace(nodeid=i, get_closest_marker=(
            lambda name, p=i in process: object() if p and name == "process" else None))
        for i in ids])


def _shares(items: list[Any], workers: int) -> list[list[str]]:
    """The contiguous shares ``--dist worksteal`` first hands the workers."""
    ids, out = [i.nodeid for i in items], []
    for n in range(workers):
        size = len(ids) // (workers - n)
        out.append(ids[:size])
        ids = ids[size:]
    return out


def test_each_long_file_heads_a_share_and_nothing_is_lost() -> None:
    cluster, city = LONG_FIRST[0], LONG_FIRST[1]
    ids = [f"tests/a/test_{n:02}.py::t" for n in range(20)]
    ids[5:5] = [f"{cluster}::test_{n}" for n in range(4)]
    ids[15:15] = [f"{city}::test_leaks"]
    ordered = _long_first(_items(ids), 4)
    assert sorted(i.nodeid for i in ordered) == sorted(ids)
    shares = _shares(ordered, 4)
    assert shares[0][:4] == [f"{cluster}::test_{n}" for n in range(4)]   # one worker, first
    assert shares[1][0] == f"{city}::test_leaks"
    assert [len(s) for s in shares] == [6, 6, 6, 7]
    # the other tests keep their order
    rest = [i.nodeid for i in ordered if i.nodeid.startswith("tests/a/")]
    assert rest == [i for i in ids if i.startswith("tests/a/")]


def test_one_worker_keeps_the_collection_order() -> None:
    ids = ["tests/a/test_x.py::t", f"{LONG_FIRST[0]}::t"]
    assert [i.nodeid for i in _long_first(_items(ids), 1)] == ids


def test_each_share_runs_its_process_tests_first() -> None:
    ids = [f"tests/a/test_{n:02}.py::t" for n in range(12)]
    process = frozenset(ids[n] for n in (2, 4, 5, 11))
    shares = _shares(_long_first(_items(ids, process), 3), 3)
    # the shares hold what they held in collection order, the process tests first
    assert shares == [[ids[2], ids[0], ids[1], ids[3]],
                      [ids[4], ids[5], ids[6], ids[7]],
                      [ids[11], ids[8], ids[9], ids[10]]]


def test_the_last_shares_take_no_long_file_and_run_pure_tests_first() -> None:
    cluster, city = LONG_FIRST[0], LONG_FIRST[1]
    ids = [f"tests/a/test_{n:02}.py::t" for n in range(10)] + [f"{cluster}::t", f"{city}::t"]
    process = frozenset([ids[0], ids[1], ids[6], ids[10], ids[11]])
    shares = _shares(_long_first(_items(ids, process), 3, cpu_first=1), 3)
    assert shares[0][0] == f"{cluster}::t" and shares[1][0] == f"{city}::t"
    assert shares[2] == [ids[7], ids[8], ids[9], ids[6]]   # pure ones before the process one

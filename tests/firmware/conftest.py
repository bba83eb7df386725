"""Fixtures for firmware tests: the compiled flash image and bench nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.tools.board_heap import MARGIN_HEAP
from knute.tools.rig.flash import compile_lib
from knute.tools.rig.node import BenchNode

# Every MicroPython test here runs on the 64- and the 32-bit build (tests/upybuild.py).
from tests.upybuild import micropython_bin, upy_bits

__all__ = ["micropython_bin", "upy_bits"]

NodeFactory = Callable[..., BenchNode]


@pytest.fixture(scope="session")
def flash_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """protocol/ and firmware/ compiled by mpy-cross once per session."""
    return compile_lib(tmp_path_factory.mktemp("flash-lib"))


# The heap goal on a board's word size: every role boots and runs in 48 KiB on the
# 32-bit build without downlinks (docs/firmware.md, "Memory"); the 64-bit port
# keeps its 64 KiB. Nodes with downlinks on get 64 KiB on the 32-bit build and the
# smallest supported board's heap on the 64-bit port (knute.tools.board_heap.bench_heap,
# the one rule).
UPY32_HEAP = MARGIN_HEAP[32]


@pytest.fixture
def bench_node(tmp_path: Path, micropython_bin: Path, flash_lib: Path,
               upy_bits: int) -> Iterator[NodeFactory]:
    """A function (config, name="node", **kw) -> BenchNode; all are closed at teardown.

    A node's heap follows ``bench_heap`` for the build (64 KiB, 48 KiB on the
    32-bit build; with downlinks on 64 KiB on the 32-bit build, the smallest board's
    heap on the 64-bit port) unless the test asks.
    """
    nodes: list[BenchNode] = []

    def make(config: dict[str, Any], name: str = "node", **kw: Any) -> BenchNode:
        kw.setdefault("bits", upy_bits)
        node = BenchNode(tmp_path / name, micropython_bin, flash_lib, config, **kw)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()

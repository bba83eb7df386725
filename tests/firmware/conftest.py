"""Fixtures for firmware tests: the compiled flash image and bench nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Every MicroPython test here runs on the 64- and the 32-bit build (tests/upybuild.py).
from tests.upybuild import micropython_bin, upy_bits
from tools.rig.flash import compile_lib
from tools.rig.node import BenchNode

__all__ = ["micropython_bin", "upy_bits"]

NodeFactory = Callable[..., BenchNode]


@pytest.fixture(scope="session")
def flash_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """protocol/ and firmware/ compiled by mpy-cross once per session."""
    return compile_lib(tmp_path_factory.mktemp("flash-lib"))


@pytest.fixture
def bench_node(tmp_path: Path, micropython_bin: Path, flash_lib: Path) -> Iterator[NodeFactory]:
    """A function (config, name="node", **kw) -> BenchNode; all are closed at teardown."""
    nodes: list[BenchNode] = []

    def make(config: dict[str, Any], name: str = "node", **kw: Any) -> BenchNode:
        node = BenchNode(tmp_path / name, micropython_bin, flash_lib, config, **kw)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()

"""The MicroPython build fixtures of tests/firmware and tests/protocol.

Every test there that runs node or protocol code on the unix port runs twice:
on the 64-bit port from PyPI (``[upy64]``) and on the 32-bit build beside the
repository (``[upy32]``, ``../shared/upy32/micropython``), whose small-int range
and object sizes are a board's. A missing build fails the test with one line;
it never skips. A test that only makes sense on one build overrides
``upy_bits`` with ``@pytest.mark.parametrize("upy_bits", [32], indirect=True)``
and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.tools.rig import upy


@pytest.fixture(scope="session", params=upy.BITS, ids=[f"upy{b}" for b in upy.BITS])
def upy_bits(request: pytest.FixtureRequest) -> int:
    """Word size of the MicroPython build the test runs on (64 or 32)."""
    return int(request.param)


@pytest.fixture(scope="session")
def micropython_bin(upy_bits: int) -> Path:
    """The unix port of ``upy_bits`` bits; a missing build fails the test."""
    try:
        return upy.micropython(upy_bits)
    except KnuteError as err:
        pytest.fail(str(err), pytrace=False)

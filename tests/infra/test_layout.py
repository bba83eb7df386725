"""The layout's rules, checked by reading every module's imports (docs: shared DESIGN).

- Shipped code never imports the test suite: ``tests`` may import ``tools.rig``,
  never the other way round.
- The floors: ``protocol/`` imports no other room; ``firmware/`` and ``gateway/``
  stand side by side on it and import neither each other nor ``tools/``.
- A shipped module longer than ``LONG_LINES`` says at its top why ("Why one module
  of ~N lines: ..."), with N within a quarter of its length.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("tools", "gateway", "protocol", "firmware")
# room -> rooms it must not import
FORBIDDEN = {
    "protocol": ("firmware", "gateway", "tools", "backend", "tests"),
    "firmware": ("gateway", "tools", "backend", "tests"),
    "gateway": ("firmware", "tools", "backend", "tests"),
    "tools": ("tests",),
}
LONG_LINES = 600
LONG_REASON = re.compile(r"Why one module of ~(\d[\d,]*) lines: ")


def imported_modules(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, nested ones too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(root: Path) -> list[str]:
    """``file:line: room imports module`` for every import that breaks ``FORBIDDEN``."""
    out: list[str] = []
    for room, banned in FORBIDDEN.items():
        for path in sorted((root / room).rglob("*.py")):
            rel = path.relative_to(root)
            for line, module in imported_modules(path.read_text(), str(rel)):
                top = module.split(".")[0]
                if top in banned:
                    out.append(f"{rel}:{line}: {room}/ imports {module}")
    return out


def test_the_scan_sees_imports_anywhere_in_a_module() -> None:
    source = ("import os\nfrom tests.firmware import harness\n"
              "def f():\n    import tests.gateway.test_daemon as t\n"
              "    from . import sibling\n")
    assert imported_modules(source) == [(1, "os"), (2, "tests.firmware"),
                                        (4, "tests.gateway.test_daemon")]


def test_the_scan_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "tools" / "bench").mkdir(parents=True)
    (tmp_path / "tools" / "bench" / "x.py").write_text(
        "import json\n\ndef case():\n    from tests.gateway.test_forwarder_tls import T\n")
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "frame.py").write_text("from gateway import config\n")
    assert violations(tmp_path) == [
        "protocol/frame.py:1: protocol/ imports gateway",
        "tools/bench/x.py:4: tools/ imports tests.gateway.test_forwarder_tls",
    ]


def test_no_shipped_module_imports_tests_and_no_arrow_runs_down_to_up() -> None:
    assert violations(ROOT) == []


def long_modules(root: Path, rooms: tuple[str, ...]) -> list[str]:
    """``path: N lines`` for each module over ``LONG_LINES`` whose docstring gives no
    reason, or one whose stated length is off by more than a quarter."""
    found = []
    for room in rooms:
        for path in sorted((root / room).rglob("*.py")):
            text = path.read_text()
            lines = text.count("\n")
            if lines <= LONG_LINES:
                continue
            reason = LONG_REASON.search(ast.get_docstring(ast.parse(text)) or "")
            stated = int(reason.group(1).replace(",", "")) if reason else 0
            if abs(stated - lines) > lines / 4:
                found.append(f"{path.relative_to(root)}: {lines} lines"
                             + (f", says ~{stated}" if reason else ""))
    return found


def test_the_long_module_check_wants_a_reason_of_about_the_right_length(
        tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    body = "x = 1\n" * (LONG_LINES + 100)
    cases = {"none.py": '"""A module."""\n',
             "stale.py": '"""A module.\n\nWhy one module of ~300 lines: one thing."""\n',
             "right.py": '"""A module.\n\nWhy one module of ~700 lines: one thing."""\n',
             "short.py": '"""A module."""\n'}
    for name, doc in cases.items():
        (tmp_path / "gateway" / name).write_text(doc + (body if name != "short.py" else ""))
    assert long_modules(tmp_path, ("gateway",)) == [
        f"gateway/none.py: {LONG_LINES + 101} lines",
        f"gateway/stale.py: {LONG_LINES + 103} lines, says ~300",
    ]


def test_long_modules_say_why_at_their_top() -> None:
    unexplained = long_modules(ROOT, (*SHIPPED, "backend"))
    assert unexplained == [], f"modules over {LONG_LINES} lines without a reason at the top"


def test_the_knute_command_and_its_rooms() -> None:
    from knute.tools.cli import COMMANDS

    for module, _help in COMMANDS.values():
        assert module.startswith(".") and "." not in module[1:], module
        assert (ROOT / "tools" / "cli" / (module[1:] + ".py")).is_file(), module
    for room in ("cli", "sim", "bench", "rig"):
        assert (ROOT / "tools" / room / "__init__.py").is_file(), room

"""backend/ depends only on the MQTT contract: it imports no other room of knute."""

from __future__ import annotations

from pathlib import Path

from tests.infra.test_layout import imported_modules

ROOT = Path(__file__).resolve().parents[2]
OTHER_ROOMS = ("protocol", "firmware", "gateway", "tools", "tests")


def backend_violations(root: Path) -> list[str]:
    """``file:line: backend/ imports module`` for each import of another room."""
    out = []
    for path in sorted((root / "backend").rglob("*.py")):
        rel = path.relative_to(root)
        for line, module in imported_modules(path.read_text(), str(rel)):
            if module.split(".")[0] in OTHER_ROOMS:
                out.append(f"{rel}:{line}: backend/ imports {module}")
    return out


def test_the_scan_catches_a_nested_import(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "x.py").write_text("def f():\n    from gateway import errors\n")
    assert backend_violations(tmp_path) == ["backend/x.py:2: backend/ imports gateway"]


def test_backend_imports_no_other_room() -> None:
    assert list((ROOT / "backend").rglob("*.py"))
    assert backend_violations(ROOT) == []


def test_no_other_room_imports_backend_but_tools() -> None:
    found = []
    for room in ("protocol", "firmware", "gateway"):
        for path in sorted((ROOT / room).rglob("*.py")):
            for line, module in imported_modules(path.read_text(), str(path)):
                if module.split(".")[0] == "backend":
                    found.append(f"{path}:{line}")
    assert found == []

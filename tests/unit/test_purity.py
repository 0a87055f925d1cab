"""The core stays pure: `cashmarkets.core` (and the pure `cashmarkets.fairness`) import only the
standard library and msgspec, and nothing that reads a clock, draws randomness or does I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cashmarkets"
PURE_PACKAGES = ("core", "fairness")
# Standard modules that would let the engine read the clock, draw randomness or do I/O.
FORBIDDEN = {
    "asyncio",
    "datetime",
    "io",
    "os",
    "pathlib",
    "random",
    "secrets",
    "select",
    "shutil",
    "socket",
    "sqlite3",
    "subprocess",
    "threading",
    "time",
    "urllib",
    "uuid",
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def pure_files() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES if (SRC / pkg).exists() for p in (SRC / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_modules_import_only_the_standard_library_and_msgspec(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        if top == "cashmarkets":
            assert name.split(".")[1] in PURE_PACKAGES, f"{path.name} imports {name}"
        elif top == "msgspec":
            continue
        else:
            assert top in sys.stdlib_module_names, f"{path.name} imports {name} (not the standard library)"
            assert top not in FORBIDDEN, f"{path.name} imports {name} (clock, randomness or I/O)"


def test_the_check_sees_the_engine() -> None:
    names = {p.name for p in pure_files()}
    assert {"engine.py", "ledger.py", "product.py"} <= names

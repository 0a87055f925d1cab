"""The core stays pure: `cashmarkets.core` (and the pure `cashmarkets.fairness`) import only the
standard library and msgspec, and nothing that reads a clock, draws randomness or does I/O.

And the layers above it hold: the store does not import the runtime nor the projector, the
runtime does not import the API, and the API's product modules do not import each other (what
they share is in api/common.py). A static scan of every import, function-level ones included."""

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


# A product's engine part outside core/ (docs/adding-a-product.md): `products/<name>/core.py`,
# and the test-only product's.
TEST_PRODUCT_CORE = SRC.parents[1] / "tests" / "support" / "coinflip" / "core.py"


def pure_files() -> list[Path]:
    found = [p for pkg in PURE_PACKAGES if (SRC / pkg).exists() for p in (SRC / pkg).rglob("*.py")]
    found += (SRC / "products").glob("*/core.py")
    return sorted([*found, TEST_PRODUCT_CORE])


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC.parents[1])))
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
    assert {"engine.py", "ledger.py", "product.py", "core.py"} <= names


# ---- the layers ---------------------------------------------------------------------------------

# (package, package it must not import)
# The projector (projection/) is an application service above the store: it may replay the log
# with the runtime's loop, the store may not import it.
LAYER_RULES = (("store", "runtime"), ("store", "projection"), ("runtime", "api"))
PRODUCT_MODULES = frozenset({"api/leverage.py", "api/spot.py", "api/chartgame.py"})

# Today's exceptions: (importing file, imported module). This set may only shrink: the test fails
# on a new violation and on a listed one that is gone (then delete its line).
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


def cashmarkets_imports(path: Path) -> set[str]:
    """Every `cashmarkets.*` name `path` imports (`from a.b import c`: a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # A relative import would need resolving; the code base has none, keep it that way.
            assert node.level == 0, f"{path}: relative import of {node.module}"
            assert node.module is not None
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "cashmarkets"}


def violations_in(path: Path, rel: str) -> set[tuple[str, str]]:
    """(rel, module) for each import of `path` (at `rel` under the package) that breaks a rule."""
    found: set[tuple[str, str]] = set()
    package = rel.split("/")[0]
    for name in cashmarkets_imports(path):
        parts = name.split(".")
        target = parts[1] if len(parts) > 1 else ""
        if (package, target) in LAYER_RULES:
            found.add((rel, ".".join(parts[:3])))
        other = "/".join(parts[1:3]) + ".py"
        if rel in PRODUCT_MODULES and other in PRODUCT_MODULES and other != rel:
            found.add((rel, ".".join(parts[:3])))
    return found


def layer_violations() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        found |= violations_in(path, path.relative_to(SRC).as_posix())
    return found


def test_the_layers_hold_but_for_the_known_violations() -> None:
    found = layer_violations()
    assert found - KNOWN_VIOLATIONS == set(), "a new import against the layers (see LAYER_RULES)"
    assert KNOWN_VIOLATIONS - found == set(), "fixed: delete these from KNOWN_VIOLATIONS"


def test_the_layer_scan_sees_each_kind_of_violation(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from cashmarkets.runtime.runner import replay\n"
        "def f():\n    import cashmarkets.api.app\n"
        "from cashmarkets.api import spot\n"
    )
    assert violations_in(source, "store/m.py") == {("store/m.py", "cashmarkets.runtime.runner")}
    assert violations_in(source, "runtime/m.py") == {
        ("runtime/m.py", "cashmarkets.api.app"),
        ("runtime/m.py", "cashmarkets.api.spot"),
    }
    assert violations_in(source, "api/leverage.py") == {("api/leverage.py", "cashmarkets.api.spot")}
    assert violations_in(source, "api/spot.py") == set()

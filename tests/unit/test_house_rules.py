"""House rules (TigerStyle, /work/shared/STYLE.md): no function in src/ longer than 70 lines, in
Python or in the C hot paths. Today's longer ones are listed below; the list may only shrink: the
test fails on a new long function and on a listed one that got short (then delete its line)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cashmarkets"
FUNCTION_LINES_MAX = 70

# "path under src/cashmarkets::qualified name": what is still too long, and why it waits.
ALLOWED_LONG = frozenset(
    {
        # Migrations are a flat list of DDL, read top to bottom; never edited once released.
        "store/migrations/versions/0001_initial.py::upgrade",
        "store/migrations/versions/0003_spot.py::upgrade",
        # A parser of the fixed EIP-4361 / Solana / Aptos message grammar, field by field.
        "auth/wallets.py::parse_message",
        "auth/wallets.py::build_message",
        # The table of Python objects and constants handed to the C extension once.
        "core/native.py::_setup",
        # Benchmarks: one scenario each, start to finish.
        "benchmarks/spot.py::generate",
        "benchmarks/signin_flood.py::run",
        "benchmarks/ws_flood.py::run",
        "benchmarks/half_open.py::run",
        "benchmarks/ws_fanout.py::run",
        "benchmarks/chartgame.py::run",
        "benchmarks/http.py::_load",
        # The C extension's one-time setup: reads the Python side's classes and constants into
        # slots, one after another.
        "core/_native.c::setup",
    }
)

# A C function definition starts at column 0 (`static ... name(`, not a prototype) and ends at
# the first `}` at column 0.
_C_START = re.compile(r"^(?:static\s+)?(?:inline\s+)?[A-Za-z_][\w\s\*]*?\b(\w+)\s*\([^;]*$")


def python_lengths(path: Path, rel: str) -> dict[str, int]:
    """Lines of every function and method (nested ones too), by qualified name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                assert child.end_lineno is not None
                found[f"{rel}::{name}"] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(tree, "")
    return found


def c_lengths(text: str, rel: str) -> dict[str, int]:
    """Lines of every top-level C function (from its signature to its closing brace)."""
    lines = text.split("\n")
    found: dict[str, int] = {}
    i = 0
    while i < len(lines):
        start = _C_START.match(lines[i])
        if start is None or lines[i].startswith((" ", "\t", "#", "/", "}")):
            i += 1
            continue
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith("{") and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or lines[j].rstrip().endswith(";"):  # a prototype
            i = j + 1
            continue
        end = j
        while end < len(lines) and lines[end] != "}":
            end += 1
        found[f"{rel}::{start.group(1)}"] = end - i + 1
        i = end + 1
    return found


def function_lengths() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        found |= python_lengths(path, path.relative_to(SRC).as_posix())
    for path in sorted(SRC.rglob("*.c")):
        found |= c_lengths(path.read_text(), path.relative_to(SRC).as_posix())
    return found


def test_no_function_is_longer_than_70_lines_but_the_listed_ones() -> None:
    lengths = function_lengths()
    long = {name for name, n in lengths.items() if n > FUNCTION_LINES_MAX}
    new = {name: lengths[name] for name in long - ALLOWED_LONG}
    assert not new, f"longer than {FUNCTION_LINES_MAX} lines: split them {new}"
    fixed = {name: lengths.get(name) for name in ALLOWED_LONG - long}
    assert not fixed, f"short now (or gone): delete from ALLOWED_LONG {fixed}"


def test_the_scan_measures_python_and_c_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("class A:\n    def f(self):\n        def g():\n            pass\n        return 1\n")
    assert python_lengths(source, "m.py") == {"m.py::A.f": 4, "m.py::A.f.g": 2}
    c = "static int proto(int a);\n\nstatic PyObject *fn(PyObject *a,\n    int b) {\n    x;\n}\n"
    assert c_lengths(c, "m.c") == {"m.c::fn": 4}
    real = c_lengths((SRC / "core" / "_native.c").read_text(), "c")
    assert real["c::fast_place"] > 10 and real["c::setup"] > FUNCTION_LINES_MAX  # it sees real code


# ---- the tests' own house rules ----------------------------------------------------------------

TESTS = SRC.parents[1] / "tests"


def test_no_test_module_imports_another_and_helpers_live_once() -> None:
    """Shared test helpers live in helper modules (tests/support/ and the *_helpers modules), never
    in a test module another one imports; `free_port` is defined once (tests/support/ports.py)."""
    importing: list[str] = []
    free_ports: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                if isinstance(node, ast.FunctionDef) and node.name == "free_port":
                    free_ports.append(rel)
                continue
            # `from .test_x import y` has module "test_x"; `from . import test_x` names it.
            if any(part.startswith("test_") for name in names for part in name.split(".")):
                importing.append(rel)
    assert importing == [], "these import a test module: move what they share to tests/support/"
    assert free_ports == ["support/ports.py"]

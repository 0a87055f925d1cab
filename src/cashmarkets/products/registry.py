"""THE registration line: the products this deployment runs, in order.

`CASHMARKETS_PRODUCTS` (comma-separated module paths) replaces the built-in list; a path
starting with `+` is added to it (`CASHMARKETS_PRODUCTS=+acme.products.dice`). Each module
exposes `MODULE`, a `ProductModule`. The ledger is not listed: it is the engine's money, always
there (core/engine.py registers it) and its rows are the projector's base (projection/).

Every process of a deployment must run the same list: the engine replicas (projector, gateway,
scheduler) replay the log with exactly the live engine's products, or they diverge.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Final

from cashmarkets.products.module import ProductModule

PRODUCTS: Final = (
    "cashmarkets.products.leverage",
    "cashmarkets.products.spot",
    "cashmarkets.products.chartgame",
)
ENV: Final = "CASHMARKETS_PRODUCTS"


def module_paths(setting: str | None) -> tuple[str, ...]:
    """The module paths a CASHMARKETS_PRODUCTS value names (None or empty: the built-in list)."""
    names = [part.strip() for part in (setting or "").split(",") if part.strip()]
    if not names:
        return PRODUCTS
    if all(name.startswith("+") for name in names):
        return PRODUCTS + tuple(name[1:] for name in names)
    return tuple(name.lstrip("+") for name in names)


@functools.cache
def load(paths: tuple[str, ...]) -> tuple[ProductModule, ...]:
    found: list[ProductModule] = []
    for path in paths:
        module = getattr(importlib.import_module(path), "MODULE", None)
        if not isinstance(module, ProductModule):
            raise SystemExit(f"{ENV}: {path} has no MODULE (a ProductModule)")
        if any(m.name == module.name for m in found):
            raise SystemExit(f"{ENV}: product {module.name!r} listed twice")
        found.append(module)
    return tuple(found)


def products() -> tuple[ProductModule, ...]:
    """The deployment's products, as CASHMARKETS_PRODUCTS says (read here and nowhere else)."""
    return load(module_paths(os.environ.get(ENV)))

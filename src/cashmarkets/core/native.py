"""The optional C hot paths (`_native.c`): the engine's apply and spot's common commands.

The extension is built by `make` (`make native`); without it, or with `EngineConfig.native`
off, the pure-Python paths run: they stay the reference the C is tested against. Both give the
same results, events and state, bit for bit (tests/unit/test_native.py runs them side by side).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Final

_module: ModuleType | None
try:
    from cashmarkets.core import _native as _module
except ImportError:  # not built: the Python paths run
    _module = None

# The interface version the Python side expects: a build of another interface is not used. (A
# build from an older source of the same interface is kept out by `make`, which rebuilds when the
# source's sha256 differs, and by test_native, which checks it.)
API: Final = 2
module: ModuleType | None = _module if _module is not None and getattr(_module, "API", None) == API else None
_ready = False


def available() -> bool:
    """Whether the C hot paths are built (and of this version), and not switched off."""
    return module is not None


def switch_off() -> None:
    """Run the Python paths in every engine built from now on in this process, whatever its
    `EngineConfig.native`: how the test suite honours CASHMARKETS_NATIVE=0 for the engines it
    builds directly (the processes pass the setting in `EngineConfig`, cashmarkets/bootstrap.py)."""
    global module
    module = None


def _setup() -> ModuleType:
    global _ready
    assert module is not None
    if not _ready:
        from cashmarkets.core import codes, ledger
        from cashmarkets.core.commands import Command
        from cashmarkets.core.products.spot import book, messages, product
        from cashmarkets.core.products.spot.config import BPS, SpotMarket
        from cashmarkets.core.results import Accepted, Reject

        spec: dict[str, Any] = {
            "Order": book.Order,
            "Level": book.Level,
            "BookSide": book.BookSide,
            "Book": book.Book,
            "Market": product._Market,
            "SpotMarket": SpotMarket,
            "Ledger": ledger.Ledger,
            "Account": ledger.Account,
            "Hold": ledger.Hold,
            "Transfer": ledger.Transfer,
            "Command": Command,
            "PlaceOrder": messages.PlaceOrder,
            "CancelOrder": messages.CancelOrder,
            "AmendOrder": messages.AmendOrder,
            "OrderView": messages.OrderView,
            "SpotOrderUpdated": messages.SpotOrderUpdated,
            "OrderPlaced": messages.OrderPlaced,
            "SpotTrade": messages.SpotTrade,
            "INSUFFICIENT_FUNDS": codes.INSUFFICIENT_FUNDS,
            "EXCEEDS_DEBITS": codes.EXCEEDS_DEBITS,
            "OVERFLOW": codes.OVERFLOW,
            "MINUTE_MS": book.MINUTE_MS,
            "DAY_MS": book.DAY_MS,
            "BPS": BPS,
            "SINGLE": ledger.SINGLE,
            "POST_PART": ledger.POST_PART,
            "_U_SINGLE": ledger._U_SINGLE,
            "Accepted": Accepted,
            "Reject": Reject,
            "OWNER_LENGTH_MAX": ledger.OWNER_LENGTH_MAX,
            "TOTAL_MAX": ledger.TOTAL_MAX,
            "PENDING": ledger.PENDING,
            "VOID_PART": ledger.VOID_PART,
            "HOLD_MORE": ledger.HOLD_MORE,
            "_U_PENDING": ledger._U_PENDING,
            "_U_PART": ledger._U_PART,
            "_U_MORE": ledger._U_MORE,
            # compiled into the C as numbers; setup() refuses them if Python's differ
            "NO_OVERDRAFT": ledger.NO_OVERDRAFT,
            "NO_CREDIT_EXCESS": ledger.NO_CREDIT_EXCESS,
            "HOLD_PENDING": ledger.HOLD_PENDING,
            "HOLD_POSTED": ledger.HOLD_POSTED,
            "HOLD_VOIDED": ledger.HOLD_VOIDED,
            "BUY": book.BUY,
            "STP_EXPIRE_TAKER": book.STP_EXPIRE_TAKER,
            "STP_EXPIRE_MAKER": book.STP_EXPIRE_MAKER,
            "STP_EXPIRE_BOTH": book.STP_EXPIRE_BOTH,
        }
        for name in (
            "_J_LINK",
            "_J_UNLINK",
            "_J_OPEN",
            "_J_CLOSE",
            "_J_FIELDS",
            "_J_BOOK",
            "_J_NEXT_ID",
            "_J_FILL",
            "_J_MINUTE",
            "_J_MINUTE_PRUNE",
        ):
            spec[name] = getattr(product, name)
        module.setup(spec)
        _ready = True
    return module


def applier(engine: Any) -> Any:
    """Engine.apply in C, bound to this engine's tables (build a new one after a restore)."""
    return _setup().Applier(engine)


def dedup_table(entries_max: int = 0) -> Any:
    """The engine's dedup table in C (same methods as dedup.DedupTable), sized for `entries_max`
    (up to the module's DEDUP_RESERVE_MAX; past it the table grows): once past 32k entries it
    grows straight to that size, so a busy engine rehashes once, not at every doubling on the
    command path."""
    assert module is not None
    table = module.Dedup()
    table.reserve(min(entries_max, module.DEDUP_RESERVE_MAX))
    return table


def spot_fast(product: Any) -> Any:
    """Spot's place/cancel/amend handlers in C, falling back to the product's own methods."""
    return _setup().SpotFast(product)

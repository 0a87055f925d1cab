"""Shared helpers for the spot tests: a small test market, funded users, one-call commands."""

from __future__ import annotations

import itertools
from typing import Any

from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.spot import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    OrderPlaced,
    OrdersCanceled,
    OrderView,
    PlaceOrder,
    SpotConfig,
    SpotMarket,
    SpotProduct,
)
from cashmarkets.core.results import Accepted, Rejected

from .engine_helpers import stamp_apply

# 1 USDC ticks, 0.01 BTC lots: one lot-tick is 10,000 micro-USDC; fees are visible at 1 lot.
MARKET = SpotMarket(
    symbol="BTC_USDC",
    base="BTC",
    quote="USDC",
    base_decimals=8,
    quote_decimals=6,
    tick_size=1_000_000,
    lot_size=1_000_000,
    max_qty_lots=1_000,
    max_price_ticks=1_000,
    min_notional=1,
    maker_fee_bps=5,
    taker_fee_bps=10,
)
UNIT = MARKET.quote_per_lot_tick
LOT = MARKET.lot_size
FUNDS = {"USDC": 10**15, "BTC": 10**15}
_ids = itertools.count()


def spot_engine(
    users: tuple[str, ...] = ("alice", "bob", "carol", "dave"), funds: dict[str, int] | None = None
) -> Engine:
    engine = Engine(products=[SpotProduct.factory(SpotConfig(markets=(MARKET,)))])
    for user in users:
        for asset, amount in (FUNDS if funds is None else funds).items():
            result, _ = stamp_apply(
                engine, Deposit(command_id=f"fund-{user}-{asset}", owner=user, asset=asset, amount=amount)
            )
            assert isinstance(result, Accepted)
    return engine


def spot(engine: Engine) -> SpotProduct:
    product = engine.products["spot"]
    assert isinstance(product, SpotProduct)
    return product


def apply(engine: Engine, cmd: Command) -> tuple[Accepted | Rejected, list[Any]]:
    return stamp_apply(engine, cmd)


def place(
    engine: Engine, owner: str, side: str, price: int = 0, qty: int = 0, **kw: Any
) -> OrderPlaced | Rejected:
    kw.setdefault("market", MARKET.symbol)
    cmd = PlaceOrder(
        command_id=f"p{next(_ids)}",
        owner=owner,
        side=side,
        price_ticks=price,
        qty_lots=qty,
        **kw,
    )
    result, _ = stamp_apply(engine, cmd)
    if isinstance(result, Rejected):
        return result
    assert isinstance(result.data, OrderPlaced), result
    return result.data


def placed(engine: Engine, owner: str, side: str, price: int = 0, qty: int = 0, **kw: Any) -> OrderPlaced:
    out = place(engine, owner, side, price, qty, **kw)
    assert isinstance(out, OrderPlaced), out
    return out


def cancel(engine: Engine, owner: str, order_id: int = 0, client_order_id: str = "") -> OrderView | Rejected:
    cmd = CancelOrder(
        command_id=f"c{next(_ids)}",
        owner=owner,
        market=MARKET.symbol,
        order_id=order_id,
        client_order_id=client_order_id,
    )
    result, _ = stamp_apply(engine, cmd)
    if isinstance(result, Rejected):
        return result
    assert isinstance(result.data, OrderView)
    return result.data


def cancel_all(engine: Engine, owner: str) -> OrdersCanceled:
    result, _ = stamp_apply(
        engine, CancelAllOrders(command_id=f"ca{next(_ids)}", owner=owner, market=MARKET.symbol)
    )
    assert isinstance(result, Accepted) and isinstance(result.data, OrdersCanceled), result
    return result.data


def amend(engine: Engine, owner: str, order_id: int, price: int = 0, qty: int = 0) -> OrderPlaced | Rejected:
    cmd = AmendOrder(
        command_id=f"a{next(_ids)}",
        owner=owner,
        market=MARKET.symbol,
        order_id=order_id,
        price_ticks=price,
        qty_lots=qty,
    )
    result, _ = stamp_apply(engine, cmd)
    if isinstance(result, Rejected):
        return result
    assert isinstance(result.data, OrderPlaced), result
    return result.data


def book_of(engine: Engine) -> list[tuple[str, int, int, int]]:
    """(side, price, order id, remaining): bids best first in queue order, then asks."""
    book = spot(engine).books[MARKET.symbol]
    return [("BUY", o.price, o.id, o.remaining) for o in book.bids.orders()] + [
        ("SELL", o.price, o.id, o.remaining) for o in book.asks.orders()
    ]


def balance(engine: Engine, owner: str, asset: str) -> int:
    acc = engine.ledger.account(owner, asset)
    return 0 if acc is None else acc.balance


def available(engine: Engine, owner: str, asset: str) -> int:
    acc = engine.ledger.account(owner, asset)
    return 0 if acc is None else acc.available

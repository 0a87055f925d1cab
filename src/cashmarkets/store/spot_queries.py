"""Reads of the spot projection: orders, trades, candles, depth and the 24h ticker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.core.products.spot import OrderView
from cashmarkets.core.products.spot.book import DAY_MS
from cashmarkets.core.products.spot.marketdata import Window, window_24h
from cashmarkets.store.tables import projector_checkpoints, spot_candles, spot_orders, spot_trades


def order_view(row: Any) -> OrderView:
    return OrderView(**{f: getattr(row, f) for f in OrderView.__struct_fields__})


async def order(db: AsyncEngine, order_id: int) -> OrderView | None:
    async with db.connect() as conn:
        row = (await conn.execute(select(spot_orders).where(spot_orders.c.order_id == order_id))).first()
    return None if row is None else order_view(row)


async def order_by_client_id(db: AsyncEngine, owner: str, client_order_id: str) -> OrderView | None:
    """The newest order of `owner` with this client order id."""
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(spot_orders)
                .where(spot_orders.c.owner == owner, spot_orders.c.client_order_id == client_order_id)
                .order_by(spot_orders.c.order_id.desc())
                .limit(1)
            )
        ).first()
    return None if row is None else order_view(row)


async def open_orders(db: AsyncEngine, owner: str, market: str | None) -> list[OrderView]:
    q = select(spot_orders).where(spot_orders.c.owner == owner, spot_orders.c.remaining_lots > 0)
    if market:
        q = q.where(spot_orders.c.market == market)
    async with db.connect() as conn:
        rows = (await conn.execute(q.order_by(spot_orders.c.order_id))).all()
    return [order_view(r) for r in rows]


async def orders_page(
    db: AsyncEngine, owner: str, market: str | None, before_id: int | None, limit: int
) -> tuple[list[OrderView], int | None]:
    """The owner's orders, newest first; the cursor is the last order id returned."""
    q = select(spot_orders).where(spot_orders.c.owner == owner)
    if market:
        q = q.where(spot_orders.c.market == market)
    if before_id is not None:
        q = q.where(spot_orders.c.order_id < before_id)
    async with db.connect() as conn:
        rows = (await conn.execute(q.order_by(spot_orders.c.order_id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [order_view(r) for r in rows], (rows[-1].order_id if more and rows else None)


async def my_trades_page(
    db: AsyncEngine, owner: str, market: str, before_id: int | None, limit: int
) -> tuple[list[Any], int | None]:
    """The owner's trades in a market (as taker or maker), newest first."""
    t = spot_trades.c
    cond = and_(t.market == market, (t.taker_owner == owner) | (t.maker_owner == owner))
    if before_id is not None:
        cond = and_(cond, t.trade_id < before_id)
    async with db.connect() as conn:
        rows = (
            await conn.execute(select(spot_trades).where(cond).order_by(t.trade_id.desc()).limit(limit + 1))
        ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].trade_id if more and rows else None)


async def recent_trades(db: AsyncEngine, market: str, limit: int) -> list[Any]:
    """The market's latest trades, oldest of them first (Binance's order)."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(spot_trades)
                .where(spot_trades.c.market == market)
                .order_by(spot_trades.c.trade_id.desc())
                .limit(limit)
            )
        ).all()
    return list(reversed(rows))


async def klines(
    db: AsyncEngine, market: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
) -> list[Any]:
    c = spot_candles.c
    q = select(spot_candles).where(c.market == market, c.interval == interval)
    if start_ms is not None:
        q = q.where(c.open_time_ms >= start_ms)
    if end_ms is not None:
        q = q.where(c.open_time_ms <= end_ms)
    if start_ms is None:
        # Without a start: the latest `limit` candles (still returned oldest first).
        async with db.connect() as conn:
            rows = (await conn.execute(q.order_by(c.open_time_ms.desc()).limit(limit))).all()
        return list(reversed(rows))
    async with db.connect() as conn:
        return list((await conn.execute(q.order_by(c.open_time_ms).limit(limit))).all())


async def ticker_24h(db: AsyncEngine, market: str, now_ms: int) -> Window | None:
    """The rolling 24 h window from the projected 1-minute candles (so rolling by the minute):
    the same computation the replicas make from the book's minutes."""
    c = spot_candles.c
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(spot_candles)
                .where(c.market == market, c.interval == "1m", c.open_time_ms > now_ms - DAY_MS - 60_000)
                .order_by(c.open_time_ms)
            )
        ).all()
    minutes = [
        [
            r.open_time_ms,
            r.open_ticks,
            r.high_ticks,
            r.low_ticks,
            r.close_ticks,
            r.volume_lots,
            r.quote_volume,
            r.trades,
            r.first_trade_id,
            r.last_trade_id,
        ]
        for r in rows
    ]
    return window_24h(minutes, now_ms)


async def depth(
    db: AsyncEngine, market: str, limit: int
) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
    """(last projected seq, bids best first, asks best first) aggregated from open orders."""
    o = spot_orders.c
    async with db.connect() as conn:
        if db.dialect.name == "postgresql":  # one snapshot for the seq and the levels
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        await conn.begin()
        seq = (await conn.execute(select(projector_checkpoints.c.seq))).scalar() or 0
        out = []
        for side, order in (("BUY", o.price_ticks.desc()), ("SELL", o.price_ticks.asc())):
            rows = (
                await conn.execute(
                    select(o.price_ticks, func.sum(o.remaining_lots))
                    .where(o.market == market, o.side == side, o.remaining_lots > 0)
                    .group_by(o.price_ticks)
                    .order_by(order)
                    .limit(limit)
                )
            ).all()
            out.append([(int(p), int(q)) for p, q in rows])
    return int(seq), out[0], out[1]

"""Spot events -> rows: orders, trades and candles, written in the projector's batch transaction.

    SpotOrderUpdated  the order's whole state: upserted into `spot_orders`
    SpotTrade         a row in `spot_trades`; the maker's open quantity and status updated in
                      place (its own report is not emitted for a fill); every candle interval
                      that contains the trade merged into `spot_candles`

Within a batch the rows are folded in memory first (an order touched a hundred times is written
once), in event order, so the result is the same as applying every event one by one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from sqlalchemy import bindparam, func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cashmarkets.core.products.spot import SpotOrderUpdated, SpotTrade
from cashmarkets.core.products.spot.marketdata import INTERVALS_MS
from cashmarkets.store.tables import CANDLE_PARTITION_PREFIX, spot_candles, spot_orders, spot_trades


class SpotBatch:
    """Spot rows of one projector batch."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}  # order id -> the whole row
        # Makers seen only through trades in this batch: order id -> (remaining, status, quote, seq, ts)
        self.fills: dict[int, list[Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.candles: dict[tuple[str, str, int], list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.orders or self.fills or self.trades)

    def add(self, event: Any, ts_ns: int) -> None:
        if isinstance(event, SpotOrderUpdated):
            row = msgspec.structs.asdict(event.order)
            self.orders[row["order_id"]] = row
            self.fills.pop(row["order_id"], None)  # the whole state supersedes earlier fills
        elif isinstance(event, SpotTrade):
            self._trade(event)

    def _trade(self, t: SpotTrade) -> None:
        self.trades.append(
            {
                "market": t.market,
                "trade_id": t.trade_id,
                "seq": t.seq,
                "ts_ns": t.ts_ns,
                "price_ticks": t.price_ticks,
                "qty_lots": t.qty_lots,
                "quote_amount": t.quote_amount,
                "taker_side": t.taker_side,
                "taker_order_id": t.taker_order_id,
                "taker_owner": t.taker_owner,
                "maker_order_id": t.maker_order_id,
                "maker_owner": t.maker_owner,
                "buyer_fee": t.buyer_fee,
                "seller_fee": t.seller_fee,
            }
        )
        row = self.orders.get(t.maker_order_id)
        if row is not None:
            row["remaining_lots"] = t.maker_remaining_lots
            row["executed_lots"] = row["qty_lots"] - t.maker_remaining_lots
            row["executed_quote"] += t.quote_amount
            row["status"] = t.maker_status
            row["updated_seq"], row["updated_ts_ns"] = t.seq, t.ts_ns
        else:
            fill = self.fills.get(t.maker_order_id)
            quote = t.quote_amount + (fill[2] if fill else 0)
            self.fills[t.maker_order_id] = [t.maker_remaining_lots, t.maker_status, quote, t.seq, t.ts_ns]
        ms = t.ts_ns // 1_000_000
        for interval, size in INTERVALS_MS.items():
            key = (t.market, interval, ms - ms % size)
            c = self.candles.get(key)
            if c is None:
                # open, high, low, close, volume, quote volume, trades, first id, last id
                self.candles[key] = [t.price_ticks] * 4 + [
                    t.qty_lots,
                    t.quote_amount,
                    1,
                    t.trade_id,
                    t.trade_id,
                ]
            else:
                c[1] = max(c[1], t.price_ticks)
                c[2] = min(c[2], t.price_ticks)
                c[3] = t.price_ticks
                c[4] += t.qty_lots
                c[5] += t.quote_amount
                c[6] += 1
                c[8] = t.trade_id

    async def write(self, conn: AsyncConnection, insert: Any, partitions: frozenset[str]) -> set[str]:
        """Write the batch (inside the projector's transaction); returns the candle partitions it
        created, for the caller to remember once the transaction commits."""
        created: set[str] = set()
        if self.orders:
            stmt = insert(spot_orders)
            columns = [c.name for c in spot_orders.columns if c.name != "order_id"]
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[spot_orders.c.order_id],
                    set_={name: getattr(stmt.excluded, name) for name in columns},
                ),
                list(self.orders.values()),
            )
        if self.fills:
            await conn.execute(
                update(spot_orders)
                .where(spot_orders.c.order_id == bindparam("b_order_id"))
                .values(
                    remaining_lots=bindparam("b_remaining"),
                    executed_lots=spot_orders.c.qty_lots - bindparam("b_remaining"),
                    executed_quote=spot_orders.c.executed_quote + bindparam("b_quote"),
                    status=bindparam("b_status"),
                    updated_seq=bindparam("b_seq"),
                    updated_ts_ns=bindparam("b_ts"),
                ),
                [
                    {
                        "b_order_id": order_id,
                        "b_remaining": f[0],
                        "b_status": f[1],
                        "b_quote": f[2],
                        "b_seq": f[3],
                        "b_ts": f[4],
                    }
                    for order_id, f in self.fills.items()
                ],
            )
        if self.trades:
            await conn.execute(spot_trades.insert(), self.trades)
        if self.candles:
            if conn.dialect.name == "postgresql":
                opens = {k[2] for k in self.candles}
                created = await ensure_partitions(
                    conn, "spot_candles", CANDLE_PARTITION_PREFIX, opens, partitions
                )
            await _merge_candles(conn, insert, self.candles)
        return created


async def _merge_candles(
    conn: AsyncConnection, insert: Any, candles: dict[tuple[str, str, int], list[int]]
) -> None:
    rows = [
        {
            "market": market,
            "interval": interval,
            "open_time_ms": open_ms,
            "open_ticks": c[0],
            "high_ticks": c[1],
            "low_ticks": c[2],
            "close_ticks": c[3],
            "volume_lots": c[4],
            "quote_volume": c[5],
            "trades": c[6],
            "first_trade_id": c[7],
            "last_trade_id": c[8],
        }
        for (market, interval, open_ms), c in candles.items()
    ]
    stmt = insert(spot_candles)
    ex = stmt.excluded
    greatest, least = (
        (func.greatest, func.least) if conn.dialect.name == "postgresql" else (func.max, func.min)
    )
    t = spot_candles.c
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.market, t.interval, t.open_time_ms],
            # The stored candle keeps its open and first trade; this batch's trades come later.
            set_={
                "high_ticks": greatest(t.high_ticks, ex.high_ticks),
                "low_ticks": least(t.low_ticks, ex.low_ticks),
                "close_ticks": ex.close_ticks,
                "volume_lots": t.volume_lots + ex.volume_lots,
                "quote_volume": t.quote_volume + ex.quote_volume,
                "trades": t.trades + ex.trades,
                "last_trade_id": ex.last_trade_id,
            },
        ),
        rows,
    )


def month_bounds_ms(open_ms: int, prefix: str = CANDLE_PARTITION_PREFIX) -> tuple[str, int, int]:
    """The monthly partition (name, start, end) holding a row at `open_ms`."""
    day = dt.datetime.fromtimestamp(open_ms / 1000, tz=dt.UTC)
    start = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    end = dt.datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=dt.UTC)
    return f"{prefix}{start:%Y%m}", int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


async def ensure_partitions(
    conn: AsyncConnection, table: str, prefix: str, times_ms: set[int], known: frozenset[str]
) -> set[str]:
    """Create the monthly partitions of `table` these times fall in (PostgreSQL; IF NOT EXISTS)."""
    made: set[str] = set()
    for t_ms in sorted(times_ms):
        name, start, end = month_bounds_ms(t_ms, prefix)
        if name in known or name in made:
            continue
        await conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
            )
        )
        made.add(name)
    return made

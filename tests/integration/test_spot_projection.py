"""Spot events projected to SQL (SQLite and PostgreSQL): orders, trades and candles agree with the
engine, whatever the batch size (batches fold rows in memory; the result must not depend on it)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cashmarkets.bootstrap import build_runtime, store_url
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.products.spot import AmendOrder, CancelOrder, PlaceOrder, SpotProduct
from cashmarkets.core.products.spot.marketdata import INTERVALS_MS
from cashmarkets.core.products.spot.product import order_view
from cashmarkets.core.results import Accepted
from cashmarkets.ops.settings import Settings
from cashmarkets.projection.spot import month_bounds_ms
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.tables import spot_candles, spot_orders, spot_trades
from tests.integration.store_helpers import partitions_of, project_everything

USERS = 6
MARKET = "BTC_USDC"


def workload(seed: int = 3, count: int = 600) -> list[Command]:
    rng = random.Random(seed)
    cmds: list[Command] = []
    for u in range(USERS):
        cmds.append(Deposit(command_id=f"f{u}b", owner=f"u{u}", asset="BTC", amount=10**12))
        cmds.append(Deposit(command_id=f"f{u}q", owner=f"u{u}", asset="USDC", amount=10**13))
    for i in range(count):
        user = f"u{rng.randrange(USERS)}"
        roll = rng.random()
        if roll < 0.6:
            side = rng.choice(("BUY", "SELL"))
            price = 6_500_000 + rng.randrange(-50, 50) * 100
            cmds.append(
                PlaceOrder(
                    command_id=f"p{i}",
                    owner=user,
                    market=MARKET,
                    side=side,
                    tif=rng.choice(("GTC", "GTC", "IOC")),
                    price_ticks=price,
                    qty_lots=rng.randrange(1, 30),
                )
            )
        elif roll < 0.8:
            cmds.append(
                CancelOrder(command_id=f"c{i}", owner=user, market=MARKET, order_id=rng.randrange(1, i + 2))
            )
        else:
            cmds.append(
                AmendOrder(
                    command_id=f"a{i}",
                    owner=user,
                    market=MARKET,
                    order_id=rng.randrange(1, i + 2),
                    price_ticks=6_500_000 + rng.randrange(-50, 50) * 100,
                )
            )
    return cmds


async def run_and_project(settings: Settings, commands: list[Command]) -> dict[str, Any]:
    url = store_url(settings)
    await migrate.upgrade(url)
    runtime = build_runtime(settings)
    await runtime.start()
    trades = 0
    for cmd in commands:
        result = await runtime.submit(cmd)
        if isinstance(result, Accepted) and hasattr(result.data, "trades"):
            trades += len(result.data.trades)
    engine = runtime.engine
    product: SpotProduct = engine.products["spot"]
    open_orders = sorted(
        (o.id, o.remaining, o.status, o.executed_quote) for o in product.orders.values() if o.market == MARKET
    )
    final_views = {o.id: order_view(o) for o in product.orders.values()}
    await runtime.stop()
    db = create_engine(url)
    try:
        await project_everything(settings, db)
        async with db.connect() as conn:
            sql_open = sorted(
                tuple(r)
                for r in await conn.execute(
                    select(
                        spot_orders.c.order_id,
                        spot_orders.c.remaining_lots,
                        spot_orders.c.status,
                        spot_orders.c.executed_quote,
                    ).where(spot_orders.c.remaining_lots > 0)
                )
            )
            sql_trades = (await conn.execute(select(func.count()).select_from(spot_trades))).scalar_one()
            trade_rows = (await conn.execute(select(spot_trades).order_by(spot_trades.c.trade_id))).all()
            candles = (await conn.execute(select(spot_candles))).all()
            orders_rows = {r.order_id: r for r in (await conn.execute(select(spot_orders))).all()}
    finally:
        await db.dispose()
    return {
        "open": open_orders,
        "sql_open": sql_open,
        "trades": trades,
        "sql_trades": sql_trades,
        "trade_rows": trade_rows,
        "candles": candles,
        "orders_rows": orders_rows,
        "final_views": final_views,
    }


def check(out: dict[str, Any]) -> None:
    assert out["trades"] > 20, "the workload should trade"
    assert out["sql_open"] == out["open"]
    assert out["sql_trades"] == out["trades"]
    assert [r.trade_id for r in out["trade_rows"]] == list(range(1, out["trades"] + 1))
    for order_id, view in out["final_views"].items():
        row = out["orders_rows"][order_id]
        assert (row.executed_lots, row.executed_quote, row.status) == (
            view.executed_lots,
            view.executed_quote,
            view.status,
        )
    # Every interval's candles add up to the trades; highs/lows bound every trade in them.
    for interval, size in INTERVALS_MS.items():
        mine = [c for c in out["candles"] if c.interval == interval]
        assert sum(c.volume_lots for c in mine) == sum(t.qty_lots for t in out["trade_rows"])
        assert sum(c.trades for c in mine) == out["trades"]
        for c in mine:
            inside = [
                t for t in out["trade_rows"] if c.open_time_ms <= t.ts_ns // 1_000_000 < c.open_time_ms + size
            ]
            assert c.trades == len(inside)
            assert c.open_ticks == inside[0].price_ticks and c.close_ticks == inside[-1].price_ticks
            assert c.high_ticks == max(t.price_ticks for t in inside)
            assert c.low_ticks == min(t.price_ticks for t in inside)
            assert (c.first_trade_id, c.last_trade_id) == (inside[0].trade_id, inside[-1].trade_id)


def settings_for(tmp_path: Path, batch: int, database_url: str | None = None) -> Settings:
    env = {
        "CASHMARKETS_DATA_DIR": str(tmp_path / f"data{batch}"),
        "CASHMARKETS_PROJECTOR_BATCH_RECORDS": str(batch),
    }
    if database_url:
        env["CASHMARKETS_DATABASE_URL"] = database_url
    return Settings.from_env(env)


@pytest.mark.parametrize("batch", [1, 7, 2000])
def test_sqlite_projection_matches_the_engine_for_any_batch_size(tmp_path: Path, batch: int) -> None:
    check(asyncio.run(run_and_project(settings_for(tmp_path, batch), workload())))


@pytest.mark.postgres
async def test_postgres_projection_matches_the_engine_and_partitions_candles(
    tmp_path: Path, pg_url: str
) -> None:
    out = await run_and_project(settings_for(tmp_path, 50, pg_url), workload())
    check(out)
    parts, in_default = await partitions_of(pg_url, "spot_candles")
    month = month_bounds_ms(out["candles"][0].open_time_ms)[0]
    assert month in parts and "spot_candles_default" in parts
    assert in_default == 0


def test_month_bounds() -> None:
    name, start, end = month_bounds_ms(1_733_011_200_000 + 5)  # 2024-12-01 00:00:00.005 UTC
    assert name == "spot_candles_202412" and start == 1_733_011_200_000
    assert end == 1_735_689_600_000  # 2025-01-01

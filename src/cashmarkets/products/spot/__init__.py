"""Spot: central limit order books (core/products/spot), with a Binance-compatible API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cashmarkets.core import codes
from cashmarkets.products.module import EmbeddedContext, ProductModule, Projection


def _engine_product() -> Any:
    from cashmarkets.core.products.spot import SpotProduct

    return SpotProduct.factory()


def _routes() -> list[Any]:
    from cashmarkets.api.binance import BinanceController
    from cashmarkets.api.spot import SpotController

    return [SpotController, BinanceController]


def _streams(registry: Any, engine: Any) -> Any:
    from cashmarkets.gateway.spot_streams import SpotStreams

    return SpotStreams(registry, engine)


def _events() -> frozenset[type]:
    from cashmarkets.core.products.spot import SpotOrderUpdated, SpotTrade

    return frozenset({SpotOrderUpdated, SpotTrade})


def _batch() -> Any:
    from cashmarkets.projection.spot import SpotBatch

    return SpotBatch()


@contextlib.asynccontextmanager
async def market_maker(context: EmbeddedContext) -> AsyncIterator[None]:
    """The demo market maker (CASHMARKETS_SPOT_BOT), in `serve`'s process."""
    import asyncio

    from cashmarkets.runtime.marketmaker import MarketMaker

    if not context.settings.spot_bot_enabled:
        yield
        return
    bot = MarketMaker(context.runtime, interval_s=context.settings.spot_bot_interval_s)
    task = asyncio.create_task(bot.run(), name="spot-bot")
    try:
        yield
    finally:
        await bot.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)


MODULE = ProductModule(
    name="spot",
    engine_product=_engine_product,
    http_statuses={codes.ORDER_NOT_FOUND: 404, codes.DUPLICATE_CLIENT_ORDER_ID: 409},
    routes=_routes,
    streams=_streams,
    projection=Projection(events=_events, batch=_batch),
    embedded_drivers=(market_maker,),
)

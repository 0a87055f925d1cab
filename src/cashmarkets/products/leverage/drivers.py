"""Leverage's drivers: the price feed (in `serve`'s process, or `cashmarkets poller` in distributed
mode) and the engine process's price publisher (the latest prices in Redis, for the API)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cashmarkets.products.module import EmbeddedContext


@contextlib.asynccontextmanager
async def price_feed(context: EmbeddedContext) -> AsyncIterator[None]:
    from cashmarkets.runtime.pricefeed import build_feed, runtime_sink, unwatch_feed, watch_feed

    # The markets of the leverage rules the log pins (decision 023), not the build's defaults.
    markets = context.runtime.engine.products["leverage"].config.markets
    feed = build_feed(context.settings, runtime_sink(context.runtime), markets)
    if feed is None:
        yield
        return
    task = asyncio.create_task(feed.run(), name="price-feed")
    watched = watch_feed(feed)
    try:
        yield
    finally:
        unwatch_feed(watched)
        await feed.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def price_publisher(client: Any, stream: str, engine: Any) -> Callable[[list[Any]], None]:
    from cashmarkets.runtime.distributed import PricePublisher

    return PricePublisher(client, stream, engine.products["leverage"])


def add_commands(app: typer.Typer) -> None:
    app.command()(poller)


def poller(
    source: Annotated[
        str | None,
        typer.Option(help="synthetic, backpack or replay [env CASHMARKETS_PRICE_SOURCE]."),
    ] = None,
    replay_file: Annotated[
        Path | None,
        typer.Option("--replay", help="Recorded bookTicker messages (JSONL); implies --source replay."),
    ] = None,
    speed: Annotated[
        float | None, typer.Option(help="Replay speed: 1 = as recorded, 0 = as fast as possible.")
    ] = None,
) -> None:
    """Distributed mode: the price poller (exactly one): appends PriceTick commands to the Redis log."""
    from cashmarkets.cli import long_running, run_async
    from cashmarkets.ops.settings import Settings
    from cashmarkets.runtime.processes import run_poller

    settings = Settings.from_env(
        price_source="replay" if replay_file is not None and source is None else source,
        price_replay_file=str(replay_file) if replay_file is not None else None,
        price_replay_speed=speed,
    )
    run_async(run_poller(long_running(settings)))

"""The chart game: provably fair rounds of generated candles (core/products/chartgame.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import typer

from cashmarkets.core import codes
from cashmarkets.products.module import EmbeddedContext, ProductModule, Projection


def _engine_product() -> Any:
    from cashmarkets.core.products.chartgame import ChartgameProduct

    return ChartgameProduct.factory()


def _routes() -> list[Any]:
    from cashmarkets.api.chartgame import ChartgameController

    return [ChartgameController]


def _socket_commands() -> dict[str, Any]:
    from cashmarkets.products.chartgame import socket

    return {"chartgame.open": socket.open_position, "chartgame.close": socket.close_position}


def _streams(registry: Any, engine: Any) -> Any:
    from cashmarkets.gateway.chart_streams import ChartStreams

    return ChartStreams(registry, engine)


def _events() -> frozenset[type]:
    from cashmarkets.core.products.chartgame import CandleMade, ChainCommitted, PositionChanged, RoundChanged

    return frozenset({CandleMade, RoundChanged, PositionChanged, ChainCommitted})


def _batch() -> Any:
    from cashmarkets.projection.chart import ChartBatch

    return ChartBatch()


@contextlib.asynccontextmanager
async def scheduler(context: EmbeddedContext) -> AsyncIterator[None]:
    """The round scheduler (CASHMARKETS_CHARTGAME), a fenced singleton here too (its lease: a
    file lock on SQLite)."""
    from cashmarkets.runtime.singletons import run_chart_role

    if not context.settings.chartgame_enabled:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_chart_role(context.settings, context.db, context.runtime, stop), name="chart-role"
    )
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)


def _add_commands(app: typer.Typer) -> None:
    app.command()(chartgame)


def chartgame() -> None:
    """Distributed mode: the chart games' round scheduler (one per deployment)."""
    from cashmarkets.cli import long_running, run_async
    from cashmarkets.ops.settings import Settings
    from cashmarkets.runtime.processes import run_chartgame

    run_async(run_chartgame(long_running(Settings.from_env())))


MODULE = ProductModule(
    name="chartgame",
    engine_product=_engine_product,
    http_statuses={codes.UNKNOWN_GAME: 404, codes.ROUND_NOT_OPEN: 409},
    routes=_routes,
    socket_commands=_socket_commands,
    streams=_streams,
    projection=Projection(events=_events, batch=_batch),
    embedded_drivers=(scheduler,),
    cli=_add_commands,
)

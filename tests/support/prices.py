"""Leverage prices for tests: a PriceTick submitted to an embedded server's runtime."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from cashmarkets.core.products.leverage import PriceTick
from cashmarkets.core.results import Accepted
from tests.integration.api_helpers import on_app_loop, services_of


async def tick(client: AsyncTestClient[Any], symbol: str, bid: int, ask: int) -> None:
    runtime = services_of(client).runtime
    cmd = PriceTick(command_id=f"tick-{symbol}-{runtime.engine.seq}", symbol=symbol, bid=bid, ask=ask)
    result = await on_app_loop(client, runtime.submit(cmd))
    assert isinstance(result, Accepted), result

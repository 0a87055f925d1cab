"""The price source of `serve` (embedded mode): ticks become PriceTick commands in the same log
as the users' instructions, so every instruction executes at the latest price before it."""

from __future__ import annotations

import time
from typing import Any

import structlog

from cashmarkets.core.products.leverage import DEFAULT_MARKETS, PriceTick
from cashmarkets.feeds import BackpackFeed, SyntheticFeed
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.runner import Overloaded, Runtime, RuntimeFailed

log = structlog.get_logger("cashmarkets.pricefeed")


def build_feed(settings: Settings, runtime: Runtime) -> Any | None:
    """The configured feed (`CASHMARKETS_PRICE_SOURCE`: synthetic, backpack or none)."""

    async def sink(tick: PriceTick) -> None:
        try:
            await runtime.submit(tick)
        except (Overloaded, RuntimeFailed) as exc:
            log.warning("price tick not logged", symbol=tick.symbol, error=repr(exc))

    source = settings.price_source
    if source == "none":
        return None
    if source == "synthetic":
        # Update ids from the clock: a restarted synthetic feed keeps increasing them, as the
        # engine requires, without reading the engine's state.
        return SyntheticFeed(
            DEFAULT_MARKETS,
            sink,
            seed=settings.price_seed,
            interval_ms=settings.price_interval_ms,
            first_update_id=time.time_ns() // 1_000,
        )
    if source == "backpack":
        return BackpackFeed(settings.backpack_url, DEFAULT_MARKETS, sink)
    raise SystemExit(f"CASHMARKETS_PRICE_SOURCE must be synthetic, backpack or none, not {source!r}")

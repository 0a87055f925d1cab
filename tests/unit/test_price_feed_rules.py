"""The embedded price feed polls the markets of the leverage rules the log pins (decision 023),
not the build's defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.commands import SetRules
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, LeverageConfig
from cashmarkets.core.results import Accepted
from cashmarkets.ops.settings import Settings
from cashmarkets.products.leverage.drivers import price_feed
from cashmarkets.products.module import EmbeddedContext


async def test_the_embedded_feed_polls_the_pinned_markets(tmp_path: Path) -> None:
    engine = build_engine(native=False)
    btc_only = LeverageConfig(markets=DEFAULT_MARKETS[:1])
    cmd = SetRules(command_id="r", product="leverage", version=1, config=msgspec.msgpack.encode(btc_only))
    cmd.seq = engine.seq + 1
    assert isinstance(engine.apply(cmd)[0], Accepted)
    ticks: list[Any] = []

    async def submit(tick: Any) -> None:
        ticks.append(tick)

    runtime = SimpleNamespace(engine=engine, submit=submit)
    settings = Settings.from_env(data_dir=tmp_path, price_source="synthetic", price_interval_ms=20)
    async with price_feed(EmbeddedContext(settings=settings, db=None, runtime=runtime)):
        for _ in range(200):
            if len(ticks) >= 3:
                break
            await asyncio.sleep(0.01)
    assert len(ticks) >= 3
    assert {t.symbol for t in ticks} == {DEFAULT_MARKETS[0].symbol}

"""SyntheticFeed: a deterministic random walk per seed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cashmarkets.core.products.leverage import DEFAULT_MARKETS, PriceTick
from cashmarkets.feeds import SyntheticFeed


class Collect:
    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []

    async def __call__(self, tick: PriceTick) -> None:
        self.ticks.append(tick)


async def run(seed: int, steps: int = 300, **kwargs: Any) -> list[PriceTick]:
    sink = Collect()
    await SyntheticFeed(DEFAULT_MARKETS, sink, seed, interval_ms=0, steps=steps, **kwargs).run()
    return sink.ticks


async def test_one_seed_gives_identical_ticks() -> None:
    first, second = await run(7), await run(7)
    assert len(first) == 300 * len(DEFAULT_MARKETS)
    assert first == second
    assert first != await run(8)
    # The sequence does not depend on pacing or on running at all.
    assert SyntheticFeed(DEFAULT_MARKETS, Collect(), 7).ticks(300) == first


async def test_ticks_are_realistic() -> None:
    ticks = await run(11, steps=2_000)
    starts = {"BTC": 6_500_000, "ETH": 350_000, "SOL": 1_500_000}
    for t in ticks:
        assert isinstance(t.bid, int) and isinstance(t.ask, int)
        assert 0 < t.bid < t.ask and 1 <= t.ask - t.bid <= 3  # spreads of 1 to 3 ticks
        assert t.bid_qty > 0 and t.ask_qty > 0
        assert abs(t.bid - starts[t.symbol]) < starts[t.symbol] // 10  # a walk, not a jump
    ids = [t.update_id for t in ticks]
    assert ids == list(range(1, len(ticks) + 1))  # monotonically increasing
    assert len({t.command_id for t in ticks}) == len(ticks)
    assert ticks[0].command_id == "tick:synthetic:11:BTC:1"
    assert [t.symbol for t in ticks[:3]] == ["BTC", "ETH", "SOL"]
    assert ticks[3].exchange_ts_us == 100_000  # synthetic time: step * interval
    assert len({t.bid for t in ticks if t.symbol == "BTC"}) > 100  # it moves


async def test_first_update_id_and_start_prices() -> None:
    ticks = await run(1, steps=2, first_update_id=1_000, start_prices={"BTC": "10", "ETH": "1", "SOL": "0.5"})
    assert [t.update_id for t in ticks] == list(range(1_000, 1_006))
    assert all(t.bid >= 1 for t in ticks)
    with pytest.raises(ValueError):
        SyntheticFeed(DEFAULT_MARKETS, Collect(), 1, start_prices={"BTC": "1"})


async def test_paced_by_the_interval_and_stoppable() -> None:
    sink = Collect()
    feed = SyntheticFeed(DEFAULT_MARKETS[:1], sink, 3, interval_ms=20, steps=6)
    started = time.monotonic()
    await feed.run()
    assert time.monotonic() - started >= 0.1  # 6 steps, the first at once
    assert len(sink.ticks) == 6 and feed.stats.forwarded == 6


async def test_stop_ends_an_endless_run() -> None:
    sink = Collect()
    feed = SyntheticFeed(DEFAULT_MARKETS, sink, 5, interval_ms=10)
    task = asyncio.create_task(feed.run())
    await asyncio.sleep(0.05)
    await feed.stop()
    await asyncio.wait_for(task, 1)
    n = len(sink.ticks)
    assert n >= 3
    await asyncio.sleep(0.03)
    assert len(sink.ticks) == n
    assert sink.ticks == feed.ticks(n // 3)  # the same sequence, paced

"""A seeded random walk of best bid/ask prices, for demos, tests and load without an exchange.

Every `interval_ms` each market moves: the mid price takes a uniform integer step of up to
`step_ppm` millionths of itself (at least one price unit), the spread is 1 to 3 price units
(ticks), quantities are 0.001 to 10 units (8 decimals). Update ids increase by one per tick over
all markets, starting at `first_update_id`; `exchange_ts_us` is synthetic time: `start_ts_us` plus
the step number times the interval (100 ms a step when the interval is 0). The sequence depends
only on the seed and the arguments, never on the clock: two feeds with one seed produce the same
ticks. (Pacing uses the clock, the values do not.)

The engine refuses an update id that is not above the last one of its symbol, so a synthetic feed
restarted against the same engine state must start above the ids it already sent
(`first_update_id`); a different seed also gives different command ids
(``tick:synthetic:<seed>:BTC:<update id>``).

This is an adapter, not the core: randomness is fine here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Iterator, Mapping

from cashmarkets.core.money import parse_amount
from cashmarkets.core.products.leverage import MarketConfig, PriceTick
from cashmarkets.feeds.ticks import Coalescer, FeedStats, TickSink, tick_command_id

__all__ = ["DEFAULT_START_PRICES", "SyntheticFeed"]

DEFAULT_START_PRICES: Mapping[str, str] = {"BTC": "65000", "ETH": "3500", "SOL": "150"}
_QTY_UNIT = 10**5  # 0.001 with 8 decimals
_MIN_MID = 4  # price units: keeps bid >= 1 whatever the spread


class SyntheticFeed:
    """Synthetic ticks for `markets`, one per market every `interval_ms` (0: as fast as possible).

    `run()` sends `steps` rounds of ticks (None: until `stop()` or cancelled). `ticks(n)` gives
    the first `n` rounds without a sink or a clock.
    """

    def __init__(
        self,
        markets: Iterable[MarketConfig],
        sink: TickSink,
        seed: int,
        interval_ms: int = 100,
        start_prices: Mapping[str, str] = DEFAULT_START_PRICES,
        *,
        steps: int | None = None,
        step_ppm: int = 50,
        first_update_id: int = 1,
        start_ts_us: int = 0,
    ) -> None:
        self.markets = tuple(markets)
        if not self.markets:
            raise ValueError("no markets")
        if interval_ms < 0:
            raise ValueError("interval_ms must be >= 0")
        if step_ppm < 0 or first_update_id < 1 or start_ts_us < 0:
            raise ValueError("step_ppm >= 0, first_update_id >= 1, start_ts_us >= 0")
        missing = [m.symbol for m in self.markets if m.symbol not in start_prices]
        if missing:
            raise ValueError(f"no start price for {', '.join(missing)}")
        self.start_mids = {
            m.symbol: max(_MIN_MID, parse_amount(start_prices[m.symbol], m.price_decimals))
            for m in self.markets
        }
        self.seed = seed
        self.interval_ms = interval_ms
        self.steps = steps
        self.step_ppm = step_ppm
        self.first_update_id = first_update_id
        self.start_ts_us = start_ts_us
        self.stats = FeedStats()
        self.coalescer = Coalescer(sink, 0, stats=self.stats)
        self._stopping = asyncio.Event()

    def rounds(self) -> Iterator[list[PriceTick]]:
        """The endless deterministic sequence: one list of ticks (market order) per step."""
        rng = random.Random(self.seed)
        mids = dict(self.start_mids)
        update_id = self.first_update_id
        source = f"synthetic:{self.seed}"
        step = 0
        while True:
            ts_us = self.start_ts_us + step * (self.interval_ms * 1000 or 100_000)
            out: list[PriceTick] = []
            for market in self.markets:
                symbol = market.symbol
                mid = mids[symbol]
                reach = max(1, mid * self.step_ppm // 1_000_000)
                mid = max(_MIN_MID, mid + rng.randint(-reach, reach))
                mids[symbol] = mid
                spread = rng.randint(1, 3)
                bid = mid - spread // 2
                out.append(
                    PriceTick(
                        command_id=tick_command_id(symbol, update_id, source),
                        symbol=symbol,
                        bid=bid,
                        ask=bid + spread,
                        bid_qty=rng.randint(1, 10_000) * _QTY_UNIT,
                        ask_qty=rng.randint(1, 10_000) * _QTY_UNIT,
                        exchange_ts_us=ts_us,
                        update_id=update_id,
                    )
                )
                update_id += 1
            yield out
            step += 1

    def ticks(self, n_steps: int) -> list[PriceTick]:
        """The ticks of the first `n_steps` steps, flattened."""
        out: list[PriceTick] = []
        for i, batch in enumerate(self.rounds()):
            if i >= n_steps:
                break
            out.extend(batch)
        return out

    async def run(self) -> None:
        """Send ticks to the sink at the configured pace until `steps`, `stop()` or cancellation."""
        self.coalescer.reopen()
        interval_s = self.interval_ms / 1000
        started = time.monotonic()
        try:
            for step, batch in enumerate(self.rounds()):
                if self._stopping.is_set() or (self.steps is not None and step >= self.steps):
                    break
                if interval_s:
                    delay = started + step * interval_s - time.monotonic()
                    if delay > 0:
                        try:
                            async with asyncio.timeout(delay):
                                await self._stopping.wait()
                            break
                        except TimeoutError:
                            pass
                else:
                    await asyncio.sleep(0)  # let others run between steps
                for tick in batch:
                    self.stats.received += 1
                    await self.coalescer(tick)
        finally:
            self._stopping.clear()
            await self.coalescer.aclose(flush=False)

    async def stop(self) -> None:
        self._stopping.set()

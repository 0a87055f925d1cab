"""A small seeded market maker for the spot markets, so a development server's books, trades and
candles are alive (`CASHMARKETS_SPOT_BOT`: on by default in embedded mode, off in distributed).

Every `interval_s`, per market: the maker (owner `MAKER`) cancels its orders and quotes `levels`
bids and asks around a reference price; now and then the taker (owner `TAKER`) sends a small IOC
across the spread, which trades. The reference is the leverage product's price of the same base
asset when the price feed runs (synthetic by default), else a seeded random walk. Both bots are
funded with development money (deposits) when they run low. Commands go through the runtime like
any client's: logged, replayed, projected.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Final

import structlog

from cashmarkets.core.commands import Deposit
from cashmarkets.core.products.spot import CancelAllOrders, PlaceOrder, SpotMarket, SpotProduct
from cashmarkets.ops.ids import new_id

log = structlog.get_logger("cashmarkets.marketmaker")

MAKER: Final = "bot-maker"
TAKER: Final = "bot-taker"
START_PRICES: Final = {"BTC": 65_000, "ETH": 3_500, "SOL": 150}  # whole USDC, for the random walk
FUND_UNITS: Final = {"USDC": 10_000_000, "BTC": 100, "ETH": 1_000, "SOL": 50_000}  # whole units


class MarketMaker:
    def __init__(self, runtime: Any, *, interval_s: float = 0.5, levels: int = 5, seed: int = 7) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self.levels = levels
        self.rng = random.Random(seed)
        self.spot: SpotProduct = runtime.engine.products["spot"]
        self.markets: list[SpotMarket] = list(self.spot.config.markets)
        self.walk: dict[str, int] = {}
        self._counter = 0
        self._run_id = new_id()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        log.info("market maker running", markets=[m.symbol for m in self.markets])
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception as exc:  # a bad step must not end the bot
                log.warning("market maker step failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()

    async def step(self) -> None:
        await self._fund()
        for m in self.markets:
            mid = self._reference(m)
            if mid is None:
                continue
            batch: list[Any] = [CancelAllOrders(command_id=self._cid(), owner=MAKER, market=m.symbol)]
            spread = max(1, mid // 2_000)  # ~5 bps a side
            for i in range(self.levels):
                qty = self._qty(m, mid)
                step = spread * (i + 1)
                for side, price in (("BUY", mid - step), ("SELL", mid + step)):
                    if price > 0:
                        batch.append(
                            PlaceOrder(
                                command_id=self._cid(),
                                owner=MAKER,
                                market=m.symbol,
                                side=side,
                                price_ticks=price,
                                qty_lots=qty,
                                order_type="LIMIT_MAKER",
                            )
                        )
            if self.rng.random() < 0.6:
                side = self.rng.choice(("BUY", "SELL"))
                batch.append(
                    PlaceOrder(
                        command_id=self._cid(),
                        owner=TAKER,
                        market=m.symbol,
                        side=side,
                        tif="IOC",
                        price_ticks=mid + 3 * spread if side == "BUY" else max(1, mid - 3 * spread),
                        qty_lots=self._qty(m, mid),
                    )
                )
            # Submitted together: the runtime keeps their order, and one group commit covers them.
            await asyncio.gather(*(self._submit(cmd) for cmd in batch))

    def _reference(self, m: SpotMarket) -> int | None:
        """The mid price in the market's ticks."""
        leverage = self.runtime.engine.products.get("leverage")
        price = leverage.prices.get(m.base) if leverage is not None else None
        if price is not None:
            shift = m.quote_decimals - int(leverage.markets[m.base].price_decimals)
            total = int(price.bid + price.ask)
            scale: int = 10 ** abs(shift)
            quote_minor = total * scale // 2 if shift >= 0 else total // (2 * scale)
            return max(1, quote_minor // m.tick_size)
        ticks = self.walk.get(m.symbol)
        if ticks is None:
            start = START_PRICES.get(m.base)
            if start is None:
                return None
            ticks = start * 10**m.quote_decimals // m.tick_size
        ticks = max(1, ticks + self.rng.randint(-ticks // 2_000 - 1, ticks // 2_000 + 1))
        self.walk[m.symbol] = ticks
        return ticks

    def _qty(self, m: SpotMarket, mid: int) -> int:
        """A few times the minimum notional, in lots."""
        per_lot = mid * m.quote_per_lot_tick
        base = max(m.min_qty_lots, -(-m.min_notional // per_lot))
        return min(m.max_qty_lots, base * self.rng.randint(2, 8))

    async def _fund(self) -> None:
        ledger = self.runtime.engine.ledger
        for owner in (MAKER, TAKER):
            for asset, units in FUND_UNITS.items():
                decimals = next(
                    (m.quote_decimals if m.quote == asset else m.base_decimals)
                    for m in self.markets
                    if asset in (m.base, m.quote)
                )
                target = units * 10**decimals
                acc = ledger.account(owner, asset)
                if acc is None or acc.available < target // 4:
                    await self._submit(
                        Deposit(command_id=self._cid(), owner=owner, asset=asset, amount=target)
                    )

    async def _submit(self, cmd: Any) -> None:
        await self.runtime.submit(cmd)

    def _cid(self) -> str:
        self._counter += 1
        return f"bot:{self._run_id}:{self._counter}"

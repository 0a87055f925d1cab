"""How an API process hands a command to the engine and gets its result.

    CommandBus
      ├── EmbeddedBus   same process: Runtime.submit (durable + applied, then answered)
      └── (distributed) XADD to the Redis log, answer on a per-process reply channel

A result that does not arrive within the timeout raises CommandTimeout: the command may still be
applied; the client learns its outcome later from GET /api/v1/commands/{id}.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeVar

from cashmarkets.core.commands import Command
from cashmarkets.core.engine import Result
from cashmarkets.core.ledger import Account
from cashmarkets.core.products.leverage import PRODUCT as LEVERAGE
from cashmarkets.core.products.leverage import LeverageProduct, PositionView, Price
from cashmarkets.core.products.spot import PRODUCT as SPOT
from cashmarkets.core.products.spot import OrderView, SpotProduct
from cashmarkets.core.products.spot.product import order_view
from cashmarkets.runtime.runner import BadCommandError, Runtime

ConfigT = TypeVar("ConfigT")

# (update id, bids best first, asks best first); levels are (price ticks, lots)
Depth = tuple[int, list[tuple[int, int]], list[tuple[int, int]]]

# The command cannot be logged at all (e.g. an integer beyond 64 bits): refused before the log.
BadCommand = BadCommandError


class CommandTimeout(Exception):
    def __init__(self, command_id: str) -> None:
        super().__init__(command_id)
        self.command_id = command_id


class CommandBus(Protocol):
    async def submit(self, cmd: Command, timeout_s: float) -> Result: ...

    async def result_of(self, command_id: str) -> Result | None: ...


class EmbeddedBus:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def submit(self, cmd: Command, timeout_s: float) -> Result:
        # No task per command: the runtime's future is awaited directly. A timeout cancels only
        # this wait; the command stays queued and is logged and applied all the same.
        future = self.runtime.enqueue(cmd)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError as exc:
            raise CommandTimeout(cmd.command_id) from exc

    async def result_of(self, command_id: str) -> Result | None:
        return self.runtime.engine.result_of(command_id)


class BalanceView(Protocol):
    """Live reads: balances, open positions and prices (engine in embedded mode, else stores)."""

    async def accounts_of(self, owner: str) -> list[Account]: ...

    async def open_positions(self, owner: str) -> list[PositionView]: ...

    async def prices(self) -> list[Price]: ...

    async def open_orders(self, owner: str, market: str | None) -> list[OrderView]: ...

    async def open_order(self, order_id: int) -> OrderView | None:
        """An open order (a closed one: from the store's history)."""
        ...

    async def depth(self, market: str, limit: int) -> Depth: ...

    async def rules(self, product: str, config_type: type[ConfigT]) -> ConfigT:
        """The product's configuration in force: the engine's, from the log (decision 023)."""
        ...


class EngineBalances:
    """Embedded mode reads balances straight from the engine: always current."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def accounts_of(self, owner: str) -> list[Account]:
        ledger = self.runtime.engine.ledger
        found = (ledger.account(owner, asset) for asset in sorted(ledger.assets))
        return [acc for acc in found if acc is not None]

    async def open_positions(self, owner: str) -> list[PositionView]:
        product: LeverageProduct = self.runtime.engine.products[LEVERAGE]
        return product.open_positions_of(owner)

    async def prices(self) -> list[Price]:
        product: LeverageProduct = self.runtime.engine.products[LEVERAGE]
        return [product.prices[s] for s in sorted(product.prices)]

    async def open_orders(self, owner: str, market: str | None) -> list[OrderView]:
        product: SpotProduct = self.runtime.engine.products[SPOT]
        return product.open_orders_of(owner, market)

    async def open_order(self, order_id: int) -> OrderView | None:
        product: SpotProduct = self.runtime.engine.products[SPOT]
        found = product.orders.get(order_id)
        return None if found is None else order_view(found)

    async def rules(self, product: str, config_type: type[ConfigT]) -> ConfigT:
        config = self.runtime.engine.products[product].config
        assert isinstance(config, config_type), f"{product} rules are a {type(config).__name__}"
        return config

    async def depth(self, market: str, limit: int) -> Depth:
        engine = self.runtime.engine
        book = engine.products[SPOT].books[market]
        return engine.seq, book.bids.depth(limit), book.asks.depth(limit)

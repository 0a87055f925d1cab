"""From engine events to gateway topics: the ledger's balances here, each product's topics in
its streams (ProductModule.streams, e.g. gateway/leverage_streams.py, spot_streams, chart_streams).

    Transfer  -> account (each user touched)     BALANCE_UPDATE {asset, balance, available}

Amounts and prices are decimal strings, as everywhere at the edges. A batch of events is turned
into messages in one pass; a user's balance is sent once per batch, after its last change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cashmarkets.core.ledger import Transfer
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.products.module import ProductModule, Streams
from cashmarkets.products.registry import products as registered


class EngineBridge:
    """Call with each applied batch's events (a runtime subscriber)."""

    def __init__(
        self, registry: TopicRegistry, engine: Any, modules: Iterable[ProductModule] | None = None
    ) -> None:
        self.registry = registry
        self.engine = engine
        # Each product the engine runs that publishes, in the registry's order.
        self.streams: list[Streams] = [
            module.streams(registry, engine)
            for module in (registered() if modules is None else modules)
            if module.streams is not None and module.name in engine.products
        ]
        registry.private_snapshot = self.snapshot

    def __call__(self, events: list[Any]) -> None:
        # Engine time of the batch's last command: the messages' timestamp (tick-to-client latency
        # is measured from it).
        ts_ms = self.engine.ts_ns // 1_000_000
        for streams in self.streams:
            streams.on_events(events, ts_ms)
        touched: dict[int, None] = {}
        for event in events:
            if type(event) is Transfer:
                touched[event.debit_account_id] = None
                touched[event.credit_account_id] = None
        accounts = self.engine.ledger.accounts
        for account_id in touched:
            acc = accounts[account_id]
            if not acc.owner.startswith("@"):
                self.registry.publish(f"account:{acc.owner}", self._balance(acc), MsgType.BALANCE_UPDATE)

    def snapshot(self, user_id: str) -> list[tuple[MsgType, Any]]:
        """What a new `account` subscriber gets first: every balance, then each product's open
        positions and orders. Indexed lookups only (one per asset, the owner's positions): a
        burst of subscriptions must not scan every account of every user."""
        ledger = self.engine.ledger
        found = (ledger.account(user_id, asset) for asset in sorted(ledger.assets))
        out: list[tuple[MsgType, Any]] = [
            (MsgType.BALANCE_UPDATE, self._balance(acc)) for acc in found if acc is not None
        ]
        for streams in self.streams:
            out.extend(streams.snapshot(user_id))
        return out

    @staticmethod
    def _balance(acc: Any) -> dict[str, Any]:
        decimals = ASSETS[acc.asset].decimals
        return {
            "asset": acc.asset,
            "balance": format_amount(acc.balance, decimals),
            "available": format_amount(acc.available, decimals),
        }

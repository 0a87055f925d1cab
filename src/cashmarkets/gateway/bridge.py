"""From engine events to gateway topics (the products' side of the registry).

    PriceUpdated           -> bookTicker.<SYMBOL>_USDC_PERP  {symbol, bid, ask, updateId, exchangeTsUs}
                              (leverage trades on perpetual futures prices: the exchange's symbol)
    PositionOpened/Closed  -> account (the owner's)           POSITION_UPDATE {event, position...}
    Transfer               -> account (each user touched)     BALANCE_UPDATE {asset, balance, available}
    spot events            -> trade/depth/bookTicker/kline/ticker.<MARKET>, account (see spot_streams)
    chart game events      -> candles.<GAME>, round.<GAME>, account (see chart_streams)

Amounts and prices are decimal strings, as everywhere at the edges. A batch of events is turned
into messages in one pass; a user's balance is sent once per batch, after its last change.
"""

from __future__ import annotations

from typing import Any

from cashmarkets.core.ledger import Transfer
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.core.products.leverage import (
    MarketConfig,
    PositionClosed,
    PositionOpened,
    PositionView,
    PriceUpdated,
)
from cashmarkets.gateway.chart_streams import ChartStreams
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.spot_streams import SpotStreams
from cashmarkets.gateway.topics import TopicRegistry

SETTLEMENT = "USDC"


def book_ticker_topic(symbol: str) -> str:
    """The leverage price topic of a market symbol ("BTC" -> bookTicker.BTC_USDC_PERP)."""
    return f"bookTicker.{symbol}_{SETTLEMENT}_PERP"


class EngineBridge:
    """Call with each applied batch's events (a runtime subscriber)."""

    def __init__(self, registry: TopicRegistry, engine: Any) -> None:
        self.registry = registry
        self.engine = engine
        self.leverage = engine.products["leverage"]
        self.markets: dict[str, MarketConfig] = dict(self.leverage.markets)
        registry.declare(book_ticker_topic(symbol) for symbol in self.markets)
        registry.private_snapshot = self.snapshot
        self.spot = SpotStreams(registry, engine) if "spot" in engine.products else None
        self.chart = ChartStreams(registry, engine) if "chartgame" in engine.products else None

    def __call__(self, events: list[Any]) -> None:
        registry = self.registry
        touched: dict[int, None] = {}
        # Engine time of the batch's last command: the messages' timestamp (tick-to-client latency
        # is measured from it).
        ts_ms = self.engine.ts_ns // 1_000_000
        for event in events:
            kind = type(event)
            if kind is PriceUpdated:
                registry.publish(book_ticker_topic(event.symbol), self._ticker(event), ts_ms=ts_ms)
            elif kind is Transfer:
                touched[event.debit_account_id] = None
                touched[event.credit_account_id] = None
            elif kind is PositionOpened:
                view = event.position
                registry.publish(
                    f"account:{view.owner}",
                    {"event": "opened", **self._position(view)},
                    MsgType.POSITION_UPDATE,
                )
            elif kind is PositionClosed:
                market = self.markets[event.symbol]
                registry.publish(
                    f"account:{event.owner}",
                    {
                        "event": "closed",
                        "orderId": event.position_id,
                        "asset": event.symbol,
                        "type": event.side,
                        "reason": event.reason,
                        "closePrice": format_amount(event.exit_price, market.price_decimals),
                        "pnl": format_amount(event.pnl, ASSETS[SETTLEMENT].decimals),
                        "payout": format_amount(event.payout, ASSETS[SETTLEMENT].decimals),
                    },
                    MsgType.POSITION_UPDATE,
                )
        if self.spot is not None:
            self.spot.on_events(events, ts_ms)
        if self.chart is not None:
            self.chart.on_events(events, ts_ms)
        accounts = self.engine.ledger.accounts
        for account_id in touched:
            acc = accounts[account_id]
            if not acc.owner.startswith("@"):
                registry.publish(f"account:{acc.owner}", self._balance(acc), MsgType.BALANCE_UPDATE)

    def snapshot(self, user_id: str) -> list[tuple[MsgType, Any]]:
        """What a new `account` subscriber gets first: every balance, then every open position.
        Indexed lookups only (one per asset, the owner's positions): a burst of subscriptions
        must not scan every account of every user."""
        ledger = self.engine.ledger
        found = (ledger.account(user_id, asset) for asset in sorted(ledger.assets))
        out: list[tuple[MsgType, Any]] = [
            (MsgType.BALANCE_UPDATE, self._balance(acc)) for acc in found if acc is not None
        ]
        for view in self.leverage.open_positions_of(user_id):
            out.append((MsgType.POSITION_UPDATE, {"event": "open", **self._position(view)}))
        if self.spot is not None:
            for order in self.spot.spot.open_orders_of(user_id):
                out.append((MsgType.ORDER_UPDATE, self.spot.order_message("OPEN", order)))
        return out

    def _ticker(self, event: PriceUpdated) -> dict[str, Any]:
        decimals = self.markets[event.symbol].price_decimals
        return {
            "symbol": book_ticker_topic(event.symbol).partition(".")[2],
            "bid": format_amount(event.bid, decimals),
            "ask": format_amount(event.ask, decimals),
            "updateId": event.update_id,
            "exchangeTsUs": event.exchange_ts_us,
        }

    def _position(self, view: PositionView) -> dict[str, Any]:
        decimals = self.markets[view.symbol].price_decimals
        usdc = ASSETS[SETTLEMENT].decimals
        return {
            "orderId": view.position_id,
            "asset": view.symbol,
            "type": view.side,
            "margin": format_amount(view.margin, usdc),
            "leverage": view.leverage,
            "openPrice": format_amount(view.entry_price, decimals),
            "liquidationPrice": format_amount(view.liquidation_price, decimals),
        }

    @staticmethod
    def _balance(acc: Any) -> dict[str, Any]:
        decimals = ASSETS[acc.asset].decimals
        return {
            "asset": acc.asset,
            "balance": format_amount(acc.balance, decimals),
            "available": format_amount(acc.available, decimals),
        }

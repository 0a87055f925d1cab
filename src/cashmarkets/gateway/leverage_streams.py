"""Leverage events -> gateway topics (the leverage product's streams).

PriceUpdated           -> bookTicker.<SYMBOL>_USDC_PERP  {symbol, bid, ask, updateId, exchangeTsUs}
                          (leverage trades on perpetual futures prices: the exchange's symbol)
PositionOpened/Closed  -> account (the owner's)           POSITION_UPDATE {event, position...}
                          (the socket reply's view, products/leverage/views.py: margin in cents)
"""

from __future__ import annotations

from typing import Any

import msgspec

from cashmarkets.core.money import format_amount
from cashmarkets.core.products.leverage import (
    MarketConfig,
    PositionClosed,
    PositionOpened,
    PositionView,
    PriceUpdated,
)
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.products.leverage.views import closed_view, trade_view

SETTLEMENT = "USDC"


def book_ticker_topic(symbol: str) -> str:
    """The leverage price topic of a market symbol ("BTC" -> bookTicker.BTC_USDC_PERP)."""
    return f"bookTicker.{symbol}_{SETTLEMENT}_PERP"


class LeverageStreams:
    def __init__(self, registry: TopicRegistry, engine: Any) -> None:
        self.registry = registry
        self.leverage = engine.products["leverage"]
        self.markets: dict[str, MarketConfig] = dict(self.leverage.markets)
        registry.declare(book_ticker_topic(symbol) for symbol in self.markets)

    def on_events(self, events: list[Any], ts_ms: int) -> None:
        registry = self.registry
        for event in events:
            kind = type(event)
            if kind is PriceUpdated:
                registry.publish(book_ticker_topic(event.symbol), self._ticker(event), ts_ms=ts_ms)
            elif kind is PositionOpened:
                view = event.position
                registry.publish(
                    f"account:{view.owner}",
                    {"event": "opened", **self._position(view)},
                    MsgType.POSITION_UPDATE,
                )
            elif kind is PositionClosed:
                registry.publish(f"account:{event.owner}", self._closed(event), MsgType.POSITION_UPDATE)

    def snapshot(self, user_id: str) -> list[tuple[MsgType, Any]]:
        """Every open position of the user (an indexed lookup)."""
        return [
            (MsgType.POSITION_UPDATE, {"event": "open", **self._position(view)})
            for view in self.leverage.open_positions_of(user_id)
        ]

    def _closed(self, event: PositionClosed) -> dict[str, Any]:
        market = self.markets[event.symbol]
        closed = closed_view(
            event.position_id, event.reason, event.exit_price, event.pnl, event.payout, market
        )
        # The socket CLOSE_POSITION reply's fields, plus which position it was (a stream reader
        # did not send the close).
        return {"event": "closed", **msgspec.to_builtins(closed), "asset": event.symbol, "type": event.side}

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
        result: dict[str, Any] = msgspec.to_builtins(trade_view(view, self.markets[view.symbol]))
        return result

"""The one view of a leverage position at the edges: the HTTP reply, the socket reply and the
account stream all build it here, so a field has one name and one unit everywhere (docs/views.md).

Engine amounts are USDC minor units (6 decimals); the wire gives `margin`, `pnl` and `payout` in
integer USD cents (what the trading clients send and read) and prices as decimal strings.
"""

from __future__ import annotations

from typing import Literal

from cashmarkets.api.schemas import Response
from cashmarkets.core.money import format_amount
from cashmarkets.core.products.leverage import MarketConfig, PositionView

MINOR_PER_CENT = 10_000  # USDC has 6 decimals, cents 2


class Trade(Response):
    """An open (or, from the history, closed) position."""

    order_id: int
    asset: str
    type: str
    margin: int  # USD cents
    leverage: int
    open_price: str
    liquidation_price: str
    status: Literal["open", "closed"]  # always present, unlike the optional fields below
    take_profit: str | None = None
    stop_loss: str | None = None
    opened_at_ns: int = 0
    close_price: str | None = None
    close_reason: str | None = None
    pnl: int | None = None  # USD cents, realized
    closed_at_ns: int | None = None


class TradeClosed(Response):
    """A close: the HTTP `trade/close` reply, the socket CLOSE_POSITION reply and the stream's."""

    order_id: int
    close_price: str
    close_reason: str
    pnl: int  # USD cents
    payout: int  # USD cents


def cents(amount_minor: int) -> int:
    """USDC minor units -> whole USD cents, floored (what the clients' integer fields hold)."""
    return amount_minor // MINOR_PER_CENT


def price_text(market: MarketConfig, price_minor: int) -> str:
    return format_amount(price_minor, market.price_decimals)


def trade_view(p: PositionView, market: MarketConfig) -> Trade:
    """An open position, as every edge shows it."""
    return Trade(
        order_id=p.position_id,
        asset=p.symbol,
        type=p.side,
        margin=cents(p.margin),
        leverage=p.leverage,
        open_price=price_text(market, p.entry_price),
        liquidation_price=price_text(market, p.liquidation_price),
        take_profit=price_text(market, p.take_profit) if p.take_profit else None,
        stop_loss=price_text(market, p.stop_loss) if p.stop_loss else None,
        status="open",
        opened_at_ns=p.opened_ts_ns,
    )


def closed_view(
    position_id: int,
    reason: str,
    exit_price_minor: int,
    pnl_minor: int,
    payout_minor: int,
    market: MarketConfig,
) -> TradeClosed:
    """A closed position, from the engine's close result or its PositionClosed event."""
    return TradeClosed(
        order_id=position_id,
        close_price=price_text(market, exit_price_minor),
        close_reason=reason,
        pnl=cents(pnl_minor),
        payout=cents(payout_minor),
    )

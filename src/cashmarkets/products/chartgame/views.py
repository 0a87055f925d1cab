"""The one view of a chart position at the edges: the HTTP replies, the socket replies and the
account stream all build it here (docs/views.md). Amounts (`stake`, `fee`, `payout`) are decimal
strings in the game's asset, prices decimal strings in the game's price decimals."""

from __future__ import annotations

from typing import Any

from cashmarkets.api.schemas import Response
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.core.products.chartgame import GameConfig


class PositionOut(Response):
    position_id: int
    game: str
    round: int
    side: str
    stake: str  # the game's asset
    fee: str  # the game's asset
    leverage: int
    entry_price: str
    bust_price: str
    opened_candle: int
    status: str
    exit_price: str | None = None  # once not open
    payout: str | None = None  # the game's asset, once not open


def position_out(p: Any, game: GameConfig) -> PositionOut:
    """A chart position (the engine's ChartPositionView or a store row: the same fields)."""
    d, money = game.model.price_decimals, ASSETS[game.asset].decimals
    done = p.status != "open"
    return PositionOut(
        position_id=p.position_id,
        game=p.game,
        round=p.round_no,
        side=p.side,
        stake=format_amount(p.stake, money),
        fee=format_amount(p.fee, money),
        leverage=p.leverage,
        entry_price=format_amount(p.entry_price, d),
        bust_price=format_amount(p.bust_price, d),
        opened_candle=p.opened_candle,
        status=p.status,
        exit_price=format_amount(p.exit_price, d) if done else None,
        payout=format_amount(p.payout, money) if done else None,
    )

"""Candles and the rolling 24 h ticker, derived from a book's minutes of trades (pure).

A book keeps the last 24 h of trades by minute of engine time (`Book.minutes`); from it any replica
(the gateway's, the API's) computes the open candle of each interval and the 24 h window without
reading the store. History beyond the open candles comes from the projection (`spot_candles`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from cashmarkets.core.products.spot.book import DAY_MS, Minute

# Binance's kline intervals that we keep, in milliseconds.
INTERVALS_MS: Final = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class Candle(msgspec.Struct, kw_only=True):
    interval: str
    open_time_ms: int
    close_time_ms: int  # the last millisecond of the interval
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int


class Window(msgspec.Struct, kw_only=True):
    """The trades of the 24 h up to `close_time_ms`."""

    open_time_ms: int
    close_time_ms: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    last_ticks: int
    volume_lots: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int


def _fold(minutes: list[Minute]) -> tuple[int, int, int, int, int, int, int, int, int]:
    """(open, high, low, close, volume, quote, trades, first id, last id) of minutes, oldest first."""
    return (
        minutes[0][1],
        max(m[2] for m in minutes),
        min(m[3] for m in minutes),
        minutes[-1][4],
        sum(m[5] for m in minutes),
        sum(m[6] for m in minutes),
        sum(m[7] for m in minutes),
        minutes[0][8],
        minutes[-1][9],
    )


def open_candles(minutes: Iterable[Minute], now_ms: int) -> dict[str, Candle]:
    """The candle of each interval that contains `now_ms`, for the intervals that have trades."""
    recent = [m for m in minutes if m[0] > now_ms - DAY_MS]
    out: dict[str, Candle] = {}
    for interval, size in INTERVALS_MS.items():
        start = now_ms - now_ms % size
        inside = [m for m in recent if m[0] >= start]
        if inside:
            o, h, low, c, v, q, n, first, last = _fold(inside)
            out[interval] = Candle(
                interval=interval,
                open_time_ms=start,
                close_time_ms=start + size - 1,
                open_ticks=o,
                high_ticks=h,
                low_ticks=low,
                close_ticks=c,
                volume_lots=v,
                quote_volume=q,
                trades=n,
                first_trade_id=first,
                last_trade_id=last,
            )
    return out


def window_24h(minutes: Iterable[Minute], now_ms: int) -> Window | None:
    """The rolling 24 h statistics (by the minute) up to `now_ms`; None without trades."""
    inside = [m for m in minutes if m[0] > now_ms - DAY_MS]
    if not inside:
        return None
    o, h, low, c, v, q, n, first, last = _fold(inside)
    return Window(
        open_time_ms=now_ms - DAY_MS,
        close_time_ms=now_ms,
        open_ticks=o,
        high_ticks=h,
        low_ticks=low,
        last_ticks=c,
        volume_lots=v,
        quote_volume=q,
        trades=n,
        first_trade_id=first,
        last_trade_id=last,
    )


def change_percent(open_ticks: int, last_ticks: int) -> str:
    """(last - open) / open in percent with two decimals, rounded half away from zero, integers only."""
    change = last_ticks - open_ticks
    hundredths = (abs(change) * 20_000 // open_ticks + 1) // 2
    return f"{'-' if change < 0 and hundredths else ''}{hundredths // 100}.{hundredths % 100:02d}"

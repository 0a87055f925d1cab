"""The book's minutes of trades (engine time) and what derives from them: open candles of every
interval, the rolling 24 h window, the change in percent."""

from __future__ import annotations

from cashmarkets.core.products.spot import PlaceOrder
from cashmarkets.core.products.spot.marketdata import change_percent, open_candles, window_24h

from .engine_helpers import stamp_apply
from .spot_helpers import MARKET, spot, spot_engine

MIN_NS = 60_000_000_000
HOUR_NS = 60 * MIN_NS
T0 = 1_733_011_200_000_000_000  # 2024-12-01 00:00 UTC


def trade(engine, ts_ns: int, price: int, qty: int) -> None:  # type: ignore[no-untyped-def]
    for owner, side in (("bob", "SELL"), ("alice", "BUY")):
        cmd = PlaceOrder(
            command_id=f"{owner}{ts_ns}{price}",
            owner=owner,
            market=MARKET.symbol,
            side=side,
            price_ticks=price,
            qty_lots=qty,
        )
        stamp_apply(engine, cmd, ts_ns)


def test_minutes_candles_and_the_24h_window() -> None:
    engine = spot_engine()
    trade(engine, T0 + 5, 100, 2)
    trade(engine, T0 + 30 * 1_000_000_000, 110, 1)
    trade(engine, T0 + MIN_NS + 1, 90, 3)
    trade(engine, T0 + 2 * HOUR_NS, 105, 1)
    book = spot(engine).books[MARKET.symbol]
    assert [m[:8] for m in book.minutes] == [
        [T0 // 1_000_000, 100, 110, 100, 110, 3, (200 + 110) * 10_000, 2],
        [T0 // 1_000_000 + 60_000, 90, 90, 90, 90, 3, 270 * 10_000, 1],
        [T0 // 1_000_000 + 7_200_000, 105, 105, 105, 105, 1, 105 * 10_000, 1],
    ]
    now_ms = (T0 + 2 * HOUR_NS) // 1_000_000 + 10
    candles = open_candles(book.minutes, now_ms)
    assert (candles["1m"].open_ticks, candles["1m"].trades) == (105, 1)
    assert "1h" in candles and candles["1h"].open_time_ms == now_ms - now_ms % 3_600_000
    day = candles["1d"]
    assert (day.open_ticks, day.high_ticks, day.low_ticks, day.close_ticks, day.volume_lots, day.trades) == (
        100,
        110,
        90,
        105,
        7,
        4,
    )
    assert (day.first_trade_id, day.last_trade_id) == (1, 4)
    w = window_24h(book.minutes, now_ms)
    assert w is not None and (w.open_ticks, w.last_ticks, w.volume_lots, w.trades) == (100, 105, 7, 4)
    # A day later only the last minute is inside the window; the book has pruned the rest.
    trade(engine, T0 + 24 * HOUR_NS + 2 * MIN_NS, 120, 1)
    assert [m[0] for m in book.minutes] == [
        T0 // 1_000_000 + 7_200_000,
        (T0 + 24 * HOUR_NS + 2 * MIN_NS) // 1_000_000,
    ]
    late = window_24h(book.minutes, (T0 + 24 * HOUR_NS + 2 * MIN_NS) // 1_000_000)
    assert late is not None and (late.open_ticks, late.last_ticks, late.trades) == (105, 120, 2)
    assert window_24h(book.minutes, (T0 + 50 * HOUR_NS) // 1_000_000) is None


def test_minutes_survive_a_snapshot() -> None:
    engine = spot_engine()
    trade(engine, T0, 100, 1)
    trade(engine, T0 + MIN_NS, 101, 1)
    twin = spot_engine(users=())
    twin.restore(engine.snapshot())
    assert list(spot(twin).books[MARKET.symbol].minutes) == list(spot(engine).books[MARKET.symbol].minutes)


def test_change_percent() -> None:
    assert change_percent(100, 105) == "5.00"
    assert change_percent(300, 299) == "-0.33"
    assert change_percent(3, 2) == "-33.33"
    assert change_percent(200, 201) == "0.50"
    assert change_percent(100_000, 100_000) == "0.00"
    assert change_percent(100_000, 99_999) == "0.00"  # less than half a hundredth: no sign

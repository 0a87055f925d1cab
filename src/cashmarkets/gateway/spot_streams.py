"""Spot topics, fed from each applied batch of engine events (part of `EngineBridge`).

    trade.<MARKET>             one message per trade           {"e": "trade", "t", "p", "q", "T", "m"}
    depth.<MARKET>             snapshot + diffs (`DepthBook`); update ids are engine seqs
    bookTicker.<MARKET>        best bid/ask when they change   {"u", "s", "b", "B", "a", "A"}
    kline.<INTERVAL>.<MARKET>  the open candle of the interval, after each batch that traded
    ticker.<MARKET>            the rolling 24 h statistics, after each batch that traded
    account (private)          ORDER_UPDATE {"event": "order", "execType", ...the HTTP order view,
                               products/spot/views.py} (every change of an order) and
                               {"event": "trade", ...} (each fill, to the taker and to the maker)

The depth diff of a batch is the difference between the book after it and the levels last sent,
computed only for the markets the batch touched.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cashmarkets.core.money import format_amount
from cashmarkets.core.products.spot import OrderView, SpotOrderUpdated, SpotProduct, SpotTrade
from cashmarkets.core.products.spot.config import SpotMarket
from cashmarkets.core.products.spot.marketdata import INTERVALS_MS, change_percent, open_candles, window_24h
from cashmarkets.gateway.depth import DepthBook
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.products.spot.views import order_out


class SpotStreams:
    def __init__(self, registry: TopicRegistry, engine: Any) -> None:
        self.registry = registry
        self.engine = engine
        self.spot: SpotProduct = engine.products["spot"]
        self.markets: dict[str, SpotMarket] = {}
        self.depth: dict[str, DepthBook] = {}
        self.best: dict[str, tuple[int, int, int, int]] = {}
        self._follow_rules()

    def _follow_rules(self) -> None:
        """Topics for the markets of the spot rules in force (decision 023): the replica's, which
        a `SetRules` in the log may re-pin after this gateway started."""
        self.config = self.spot.config
        self.markets = {m.symbol: m for m in self.config.markets}
        self.depth = {}
        self.best = {}
        engine = self.engine
        registry = self.registry
        for symbol, m in self.markets.items():
            topics = [f"trade.{symbol}", f"bookTicker.{symbol}", f"ticker.{symbol}"]
            topics += [f"kline.{interval}.{symbol}" for interval in INTERVALS_MS]
            registry.declare(topics)
            depth = DepthBook(registry, symbol, m.quote_decimals, m.base_decimals)
            book = self.spot.books[symbol]
            # Start from the replica's book as it is now (update id: the engine's seq).
            depth.bids = {p * m.tick_size: q * m.lot_size for p, q in book.bids.depth(len(book.bids.keys))}
            depth.asks = {p * m.tick_size: q * m.lot_size for p, q in book.asks.depth(len(book.asks.keys))}
            depth.last_update_id = engine.seq
            self.depth[symbol] = depth
            self.best[symbol] = self._best(symbol)

    def snapshot(self, user_id: str) -> list[tuple[MsgType, Any]]:
        """Every open order of the user."""
        return [
            (MsgType.ORDER_UPDATE, self.order_message("OPEN", o)) for o in self.spot.open_orders_of(user_id)
        ]

    def on_events(self, events: list[Any], ts_ms: int) -> None:
        if self.spot.config is not self.config:
            self._follow_rules()
        touched: dict[str, bool] = {}  # market -> traded in this batch
        publish = self.registry.publish
        for event in events:
            kind = type(event)
            if kind is SpotTrade:
                touched[event.market] = True
                publish(f"trade.{event.market}", self._trade(event), ts_ms=ts_ms)
                for owner, role in ((event.taker_owner, "taker"), (event.maker_owner, "maker")):
                    publish(f"account:{owner}", self._fill(event, role), MsgType.ORDER_UPDATE, ts_ms=ts_ms)
            elif kind is SpotOrderUpdated:
                touched.setdefault(event.order.market, False)
                message = self.order_message(event.exec_type, event.order)
                publish(f"account:{event.order.owner}", message, MsgType.ORDER_UPDATE, ts_ms=ts_ms)
        for symbol, traded in touched.items():
            self._book_changed(symbol, ts_ms)
            if traded:
                self._market_data(symbol, ts_ms)

    # ---- per market ----

    def _book_changed(self, symbol: str, ts_ms: int) -> None:
        m = self.markets[symbol]
        book = self.spot.books[symbol]
        depth = self.depth[symbol]
        changes = []
        for sent, side in ((depth.bids, book.bids), (depth.asks, book.asks)):
            now = {level.price * m.tick_size: level.qty * m.lot_size for level in side.levels.values()}
            diff = [(p, q) for p, q in now.items() if sent.get(p) != q]
            diff += [(p, 0) for p in sent if p not in now]
            changes.append(sorted(diff))
        seq = self.engine.seq
        if (changes[0] or changes[1]) and seq > depth.last_update_id:
            depth.update(depth.last_update_id + 1, seq, changes[0], changes[1])
        best = self._best(symbol)
        if best != self.best[symbol]:
            self.best[symbol] = best
            bid, bid_qty, ask, ask_qty = best
            self.registry.publish(
                f"bookTicker.{symbol}",
                {
                    "u": seq,
                    "s": symbol,
                    "b": self._price(m, bid) if bid else None,
                    "B": self._qty(m, bid_qty) if bid else None,
                    "a": self._price(m, ask) if ask else None,
                    "A": self._qty(m, ask_qty) if ask else None,
                },
                ts_ms=ts_ms,
            )

    def _market_data(self, symbol: str, ts_ms: int) -> None:
        m = self.markets[symbol]
        minutes = self.spot.books[symbol].minutes
        now_ms = self.engine.ts_ns // 1_000_000
        for interval, c in open_candles(minutes, now_ms).items():
            self.registry.publish(
                f"kline.{interval}.{symbol}",
                {
                    "e": "kline",
                    "s": symbol,
                    "k": {
                        "t": c.open_time_ms,
                        "T": c.close_time_ms,
                        "i": interval,
                        "o": self._price(m, c.open_ticks),
                        "h": self._price(m, c.high_ticks),
                        "l": self._price(m, c.low_ticks),
                        "c": self._price(m, c.close_ticks),
                        "v": self._qty(m, c.volume_lots),
                        "q": format_amount(c.quote_volume, m.quote_decimals),
                        "n": c.trades,
                        "f": c.first_trade_id,
                        "L": c.last_trade_id,
                    },
                },
                ts_ms=ts_ms,
            )
        w = window_24h(minutes, now_ms)
        if w is not None:
            self.registry.publish(
                f"ticker.{symbol}",
                {
                    "e": "24hrTicker",
                    "s": symbol,
                    "o": self._price(m, w.open_ticks),
                    "h": self._price(m, w.high_ticks),
                    "l": self._price(m, w.low_ticks),
                    "c": self._price(m, w.last_ticks),
                    "P": change_percent(w.open_ticks, w.last_ticks),
                    "v": self._qty(m, w.volume_lots),
                    "q": format_amount(w.quote_volume, m.quote_decimals),
                    "O": w.open_time_ms,
                    "C": w.close_time_ms,
                    "F": w.first_trade_id,
                    "L": w.last_trade_id,
                    "n": w.trades,
                },
                ts_ms=ts_ms,
            )

    def _best(self, symbol: str) -> tuple[int, int, int, int]:
        book = self.spot.books[symbol]
        bid = book.bids.best()
        ask = book.asks.best()
        return (
            bid.price if bid else 0,
            bid.qty if bid else 0,
            ask.price if ask else 0,
            ask.qty if ask else 0,
        )

    # ---- messages ----

    @staticmethod
    def _price(m: SpotMarket, ticks: int) -> str:
        return format_amount(ticks * m.tick_size, m.quote_decimals)

    @staticmethod
    def _qty(m: SpotMarket, lots: int) -> str:
        return format_amount(lots * m.lot_size, m.base_decimals)

    def _trade(self, t: SpotTrade) -> dict[str, Any]:
        m = self.markets[t.market]
        return {
            "e": "trade",
            "s": t.market,
            "t": t.trade_id,
            "p": self._price(m, t.price_ticks),
            "q": self._qty(m, t.qty_lots),
            "T": t.ts_ns // 1_000_000,
            "m": t.taker_side == "SELL",  # the buyer was the maker
        }

    def _fill(self, t: SpotTrade, role: str) -> dict[str, Any]:
        m = self.markets[t.market]
        taker = role == "taker"
        buyer = (t.taker_side == "BUY") == taker
        fee, fee_asset = m.fee_text(buyer, t.buyer_fee, t.seller_fee)
        return {
            "event": "trade",
            "market": t.market,
            "tradeId": t.trade_id,
            "orderId": t.taker_order_id if taker else t.maker_order_id,
            "side": "BUY" if buyer else "SELL",
            "role": role,
            "price": self._price(m, t.price_ticks),
            "qty": self._qty(m, t.qty_lots),
            "quoteQty": format_amount(t.quote_amount, m.quote_decimals),
            "fee": fee,
            "feeAsset": fee_asset,
            # The maker's order after the fill (the taker's comes in its own "order" message).
            **(
                {"remainingQty": self._qty(m, t.maker_remaining_lots), "status": t.maker_status}
                if not taker
                else {}
            ),
        }

    def order_message(self, exec_type: str, o: OrderView) -> dict[str, Any]:
        """An order's state (the HTTP replies' view); `execType` says what happened (OPEN: sent
        on subscribing)."""
        view = msgspec.to_builtins(order_out(o, self.markets[o.market]))
        return {"event": "order", "execType": exec_type, **view}

"""The order book's data structures, shaped for speed in CPython.

    Book       one market: bids and asks, the next trade id, the last update id (engine seq)
    BookSide   price levels in a dict keyed by `key = sign * price` plus one ascending list of
               those keys, so the best level is always `keys[-1]` (bids: sign +1, highest price
               last; asks: sign -1, lowest price last) and taking it off is a `pop()`
    Level      a FIFO of resting orders as an intrusive doubly linked list: append and cancel
               are O(1) and allocate nothing
    Order      one order, with the links into its level

No ledger and no events here: the product (`product.py`) decides; this module only keeps the
queues and their totals right.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from typing import Final

BUY: Final = 0
SELL: Final = 1

# Statuses (Binance's names).
NEW: Final = "NEW"
PARTIALLY_FILLED: Final = "PARTIALLY_FILLED"
FILLED: Final = "FILLED"
CANCELED: Final = "CANCELED"
REJECTED: Final = "REJECTED"  # never stored: a rejected command leaves no order behind
EXPIRED: Final = "EXPIRED"
EXPIRED_IN_MATCH: Final = "EXPIRED_IN_MATCH"
STATUSES: Final = (NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED, EXPIRED_IN_MATCH)

# Self-trade prevention: which side expires when an order meets one of its owner's own.
STP_EXPIRE_TAKER: Final = 1
STP_EXPIRE_MAKER: Final = 2
STP_EXPIRE_BOTH: Final = 3
STP_MODES: Final = {
    "EXPIRE_TAKER": STP_EXPIRE_TAKER,
    "EXPIRE_MAKER": STP_EXPIRE_MAKER,
    "EXPIRE_BOTH": STP_EXPIRE_BOTH,
}


class Order:
    __slots__ = (
        "client_order_id",
        "created_seq",
        "created_ts_ns",
        "executed",
        "executed_quote",
        "hold_id",
        "id",
        "level",
        "market",
        "next",
        "order_type",
        "owner",
        "prev",
        "price",
        "qty",
        "quote_qty",
        "remaining",
        "side",
        "status",
        "stp",
        "tif",
        "updated_seq",
        "updated_ts_ns",
    )

    def __init__(
        self,
        order_id: int,
        market: str,
        owner: str,
        client_order_id: str,
        side: int,
        order_type: str,
        tif: str,
        stp: int,
        price: int,
        qty: int,
        quote_qty: int,
        seq: int,
        ts_ns: int,
    ) -> None:
        self.id = order_id
        self.market = market
        self.owner = owner
        self.client_order_id = client_order_id
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.stp = stp
        self.price = price
        self.qty = qty
        self.quote_qty = quote_qty
        self.remaining = qty
        self.executed = 0
        self.executed_quote = 0
        self.hold_id = 0
        self.status = NEW
        self.created_seq = seq
        self.created_ts_ns = ts_ns
        self.updated_seq = seq
        self.updated_ts_ns = ts_ns
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Level | None = None

    def __repr__(self) -> str:
        side = "BUY" if self.side == BUY else "SELL"
        return f"Order({self.id} {self.owner} {side} {self.remaining}/{self.qty}@{self.price} {self.status})"


class Level:
    __slots__ = ("count", "head", "key", "price", "qty", "tail")

    def __init__(self, price: int, key: int) -> None:
        self.price = price
        self.key = key
        self.head: Order | None = None
        self.tail: Order | None = None
        self.qty = 0  # lots resting at this price
        self.count = 0


class BookSide:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def best(self) -> Level | None:
        keys = self.keys
        return self.levels[keys[-1]] if keys else None

    def append(self, order: Order) -> None:
        """Queue `order` last at its price (a new level if none rests there)."""
        key = self.sign * order.price
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = Level(order.price, key)
            keys = self.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        tail = level.tail
        order.prev = tail
        order.next = None
        if tail is None:
            level.head = order
        else:
            tail.next = order
        level.tail = order
        level.qty += order.remaining
        level.count += 1
        order.level = level

    def insert_after(self, order: Order, prev: Order | None) -> None:
        """Put `order` back right after `prev` (None: first) at its price: undoes an unlink."""
        key = self.sign * order.price
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = Level(order.price, key)
            insort(self.keys, key)
        nxt = level.head if prev is None else prev.next
        order.prev = prev
        order.next = nxt
        if prev is None:
            level.head = order
        else:
            prev.next = order
        if nxt is None:
            level.tail = order
        else:
            nxt.prev = order
        level.qty += order.remaining
        level.count += 1
        order.level = level

    def unlink(self, order: Order) -> Order | None:
        """Take `order` out of its level (dropping the level when empty); returns its predecessor."""
        level = order.level
        assert level is not None, order
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        level.qty -= order.remaining
        level.count -= 1
        order.prev = order.next = None
        order.level = None
        if level.count == 0:
            key = level.key
            del self.levels[key]
            keys = self.keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        return prev

    def orders(self) -> list[Order]:
        """Every resting order, best price first and in queue order within a price."""
        out: list[Order] = []
        levels = self.levels
        for key in reversed(self.keys):
            o = levels[key].head
            while o is not None:
                out.append(o)
                o = o.next
        return out

    def depth(self, limit: int) -> list[tuple[int, int]]:
        """(price, lots) of the best `limit` levels."""
        levels = self.levels
        return [(levels[k].price, levels[k].qty) for k in reversed(self.keys[-limit:])] if limit > 0 else []


# A minute of trades: [open_time_ms, open, high, low, close, volume_lots, quote_volume, trades,
# first_trade_id, last_trade_id] (prices in ticks).
Minute = list[int]
MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000


class Book:
    __slots__ = ("asks", "bids", "minutes", "next_trade_id", "symbol", "trading", "update_id")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(1)
        self.asks = BookSide(-1)
        self.next_trade_id = 1
        self.update_id = 0  # seq of the last command that changed this book
        self.trading = True
        # The last 24 h of trades by minute of engine time, oldest first: the 24 h ticker and the
        # open candles of every interval derive from it (`marketdata`), on every replica alike.
        self.minutes: deque[Minute] = deque()

    def side(self, side: int) -> BookSide:
        return self.bids if side == BUY else self.asks

    def best_bid(self) -> int:
        keys = self.bids.keys
        return keys[-1] if keys else 0

    def best_ask(self) -> int:
        keys = self.asks.keys
        return -keys[-1] if keys else 0

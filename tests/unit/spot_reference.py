"""A deliberately simple O(n) order book: the reference the spot engine is checked against.

Resting orders live in one flat list; every match sorts the candidates from scratch. No linked
lists, no levels, no dry run (FOK and market orders are tried on a copy of the book), no ledger.
It follows the documented rules of `cashmarkets.core.products.spot.product`, written again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass
class RefOrder:
    id: int
    owner: str
    side: str  # BUY | SELL
    order_type: str
    tif: str
    stp: str
    price: int
    qty: int
    remaining: int
    priority: int
    executed: int = 0
    status: str = "NEW"


@dataclass
class RefTrade:
    price: int
    qty: int
    taker_id: int
    maker_id: int
    taker_side: str


@dataclass
class RefBook:
    unit: int
    resting: list[RefOrder] = field(default_factory=list)
    next_id: int = 1
    clock: int = 0

    def book(self) -> list[tuple[str, int, int, int]]:
        """(side, price, order id, remaining), best first, in time priority within a price."""
        bids = sorted((o for o in self.resting if o.side == "BUY"), key=lambda o: (-o.price, o.priority))
        asks = sorted((o for o in self.resting if o.side == "SELL"), key=lambda o: (o.price, o.priority))
        return [(o.side, o.price, o.id, o.remaining) for o in bids + asks]

    def _candidates(self, side: str, price: int) -> list[RefOrder]:
        if side == "BUY":
            found = [o for o in self.resting if o.side == "SELL" and (price == 0 or o.price <= price)]
            return sorted(found, key=lambda o: (o.price, o.priority))
        found = [o for o in self.resting if o.side == "BUY" and (price == 0 or o.price >= price)]
        return sorted(found, key=lambda o: (-o.price, o.priority))

    def crosses(self, side: str, price: int) -> bool:
        return bool(self._candidates(side, price))

    def _match(self, taker: RefOrder, budget: int, trades: list[RefTrade]) -> str:
        """Fill taker; returns why it stopped: done | stp | budget | book."""
        spent = 0
        for maker in self._candidates(taker.side, taker.price):
            if taker.remaining == 0:
                return "done"
            if budget and budget - spent < maker.price * self.unit:
                return "budget"
            if maker.owner == taker.owner:
                if taker.stp in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
                    self.resting.remove(maker)
                    maker.status = "EXPIRED_IN_MATCH"
                if taker.stp in ("EXPIRE_TAKER", "EXPIRE_BOTH"):
                    return "stp"
                continue
            lots = min(taker.remaining, maker.remaining)
            if budget:
                lots = min(lots, (budget - spent) // (maker.price * self.unit))
            spent += lots * maker.price * self.unit
            taker.remaining -= lots
            taker.executed += lots
            maker.remaining -= lots
            maker.executed += lots
            maker.status = "FILLED" if maker.remaining == 0 else "PARTIALLY_FILLED"
            if maker.remaining == 0:
                self.resting.remove(maker)
            trades.append(RefTrade(maker.price, lots, taker.id, maker.id, taker.side))
            if budget and maker.remaining:
                return "budget"  # it could not pay for all of this order
        if budget and spent == budget:
            return "budget"
        return "done" if taker.remaining == 0 else "book"

    def place(
        self,
        owner: str,
        side: str,
        order_type: str,
        tif: str,
        price: int,
        qty: int,
        quote_qty: int,
        stp: str,
    ) -> tuple[str, RefOrder | None, list[RefTrade]]:
        """('ok', order, trades) or ('would_take', None, [])."""
        if order_type == "LIMIT_MAKER" and self.crosses(side, price):
            return "would_take", None, []
        if order_type == "MARKET":
            tif = "IOC"
        elif order_type == "LIMIT_MAKER":
            tif = "GTC"
        self.clock += 1
        order = RefOrder(
            self.next_id, owner, side, order_type, tif, stp, price, qty or 1 << 60, qty or 1 << 60, self.clock
        )
        self.next_id += 1
        trades: list[RefTrade] = []
        if tif == "FOK":
            trial = copy.deepcopy(self)
            trial_order = copy.deepcopy(order)
            trial._match(trial_order, 0, [])
            if trial_order.remaining:
                order.status = "EXPIRED"
                order.remaining = 0
                return "ok", order, trades
        stop = self._match(order, quote_qty, trades)
        if quote_qty:
            order.qty = order.executed
            order.remaining = 0
            order.status = {"budget": "FILLED", "stp": "EXPIRED_IN_MATCH"}.get(stop, "EXPIRED")
            if order.executed == 0 and stop != "stp":
                order.status = "EXPIRED"
            return "ok", order, trades
        if order.remaining == 0:
            order.status = "FILLED"
        elif stop == "stp":
            order.status = "EXPIRED_IN_MATCH"
            order.remaining = 0
        elif tif != "GTC":
            order.status = "EXPIRED"
            order.remaining = 0
        else:
            order.status = "PARTIALLY_FILLED" if order.executed else "NEW"
            self.resting.append(order)
        return "ok", order, trades

    def find(self, owner: str, order_id: int) -> RefOrder | None:
        for o in self.resting:
            if o.id == order_id and o.owner == owner:
                return o
        return None

    def cancel(self, owner: str, order_id: int) -> RefOrder | None:
        order = self.find(owner, order_id)
        if order is not None:
            self.resting.remove(order)
            order.status = "CANCELED"
            order.remaining = 0
        return order

    def amend(self, owner: str, order_id: int, price: int, qty: int) -> tuple[str, list[RefTrade]]:
        order = self.find(owner, order_id)
        if order is None:
            return "order_not_found", []
        price = price or order.price
        qty = qty or order.qty
        if qty <= order.executed:
            return "bad_quantity", []
        self.resting.remove(order)
        crosses = self.crosses(order.side, price)
        if order.order_type == "LIMIT_MAKER" and crosses:
            self.resting.append(order)
            return "would_take", []
        trades: list[RefTrade] = []
        if price == order.price and qty <= order.qty:
            order.remaining -= order.qty - qty
            order.qty = qty
            self.resting.append(order)  # same priority: the list order does not matter
            return "ok", trades
        order.price = price
        order.remaining = qty - order.executed
        order.qty = qty
        self.clock += 1
        order.priority = self.clock
        stop = self._match(order, 0, trades) if crosses else "book"
        if order.remaining == 0:
            order.status = "FILLED"
        elif stop == "stp":
            order.status = "EXPIRED_IN_MATCH"
            order.remaining = 0
        else:
            order.status = "PARTIALLY_FILLED" if order.executed else "NEW"
            self.resting.append(order)
        return "ok", trades

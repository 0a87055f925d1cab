"""`depth.<market>`: an order book kept in sync over the socket, as Binance does it.

A subscriber first gets a snapshot `{"type": "snapshot", "lastUpdateId": L, "bids", "asks"}`,
then diffs `{"type": "depthUpdate", "U": first, "u": last, "b": [[price, qty], ...], "a": [...]}`
where a quantity of "0" removes the level. The snapshot and the subscription happen in one step of
the event loop, so the first diff a subscriber sees has `U == L + 1`, and every later diff has
`U == previous u + 1`; a client that sees anything else has missed an update and resubscribes.
`LocalBook` is that client procedure (tests use it; docs/websocket.md describes it).

Prices and quantities are integers here (ticks and lots) and decimal strings on the wire. The
product that owns the book (spot) calls `update` with each batch's level changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cashmarkets.core.money import format_amount, parse_amount
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry

Level = tuple[int, int]  # (price ticks, quantity lots); quantity 0 removes the level


class DepthBook:
    def __init__(self, registry: TopicRegistry, market: str, price_decimals: int, qty_decimals: int) -> None:
        self.registry = registry
        self.topic = f"depth.{market}"
        self.price_decimals = price_decimals
        self.qty_decimals = qty_decimals
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_update_id = 0
        registry.declare([self.topic])
        registry.snapshots[self.topic] = self.snapshot

    def update(self, first_id: int, last_id: int, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply one batch of level changes (update ids first..last) and publish it as a diff."""
        assert first_id == self.last_update_id + 1 and last_id >= first_id, (first_id, last_id)
        bids, asks = list(bids), list(asks)
        for side, changes in ((self.bids, bids), (self.asks, asks)):
            for price, qty in changes:
                assert qty >= 0 and price > 0, (price, qty)
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        self.last_update_id = last_id
        self.registry.publish(
            self.topic,
            {
                "type": "depthUpdate",
                "U": first_id,
                "u": last_id,
                "b": [self._level(p, q) for p, q in bids],
                "a": [self._level(p, q) for p, q in asks],
            },
        )

    def snapshot(self) -> list[tuple[MsgType, Any]]:
        return [
            (
                MsgType.STREAM_DATA,
                {
                    "type": "snapshot",
                    "lastUpdateId": self.last_update_id,
                    "bids": [self._level(p, self.bids[p]) for p in sorted(self.bids, reverse=True)],
                    "asks": [self._level(p, self.asks[p]) for p in sorted(self.asks)],
                },
            )
        ]

    def _level(self, price: int, qty: int) -> list[str]:
        return [format_amount(price, self.price_decimals), format_amount(qty, self.qty_decimals)]


class OutOfSync(Exception):
    """A diff that does not follow the last one: the client must resubscribe."""


class LocalBook:
    """The client side: build a book from the snapshot and the diffs, checking the update ids."""

    def __init__(self, price_decimals: int, qty_decimals: int) -> None:
        self.price_decimals = price_decimals
        self.qty_decimals = qty_decimals
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_update_id: int | None = None

    def on_message(self, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            self.bids = dict(self._parse(level) for level in data["bids"])
            self.asks = dict(self._parse(level) for level in data["asks"])
            self.last_update_id = data["lastUpdateId"]
            return
        if self.last_update_id is None or data["U"] != self.last_update_id + 1:
            raise OutOfSync(f"diff {data['U']}..{data['u']} after {self.last_update_id}")
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for level in levels:
                price, qty = self._parse(level)
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        self.last_update_id = data["u"]

    def _parse(self, level: list[str]) -> Level:
        price = parse_amount(level[0], self.price_decimals)
        qty = parse_amount(level[1], self.qty_decimals, allow_zero=True)
        return price, qty

"""A bare Ledger with a few accounts, for the ledger's unit tests."""

from __future__ import annotations

from typing import Any

from cashmarkets.core.ledger import WORLD, Account, Ledger, Transfer

ASSETS = frozenset({"USD", "BTC"})


class Book:
    """A bare Ledger with a few accounts: world (may go negative), alice funded with 1000 USD,
    bob and carol empty, plus alice's BTC account."""

    def __init__(self) -> None:
        self.ledger = Ledger(ASSETS)
        self.events: list[Any] = []
        self.ledger.begin(self.events)
        self.world = self.open(WORLD, "USD")
        self.alice = self.open("alice", "USD")
        self.bob = self.open("bob", "USD")
        self.carol = self.open("carol", "USD")
        self.alice_btc = self.open("alice", "BTC")
        funded = self.ledger.move(self.world, self.alice, 1000, "deposit", 1)
        assert isinstance(funded, Transfer)
        # A fresh command: an empty journal and event list.
        self.events = []
        self.ledger.begin(self.events)

    def open(self, owner: str, asset: str, flags: int | None = None) -> Account:
        acc = self.ledger.open_account(owner, asset, flags)
        assert isinstance(acc, Account), acc
        return acc

    def hold(self, dr: Account, cr: Account, amount: int) -> int:
        out = self.ledger.move(dr, cr, amount, "hold", 2, pending=True)
        assert isinstance(out, Transfer), out
        return out.id

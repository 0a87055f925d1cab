"""The coin flip's engine part, pure like cashmarkets.core (tests/unit/test_purity.py checks it).

A user calls heads or tails with a stake; the coin is the first bit of sha256(command id), so
the same log flips the same coins. Won: the house pays the stake; lost: the stake goes to it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from cashmarkets.core import codes
from cashmarkets.core.commands import Command
from cashmarkets.core.engine import Handler
from cashmarkets.core.ledger import HOUSE
from cashmarkets.core.reconcile import Check
from cashmarkets.core.results import Reject, ResultData

PRODUCT: Final = "coinflip"
CALLS: Final = ("heads", "tails")
# The product's own rejection code (HTTP 400, as its module declares).
BAD_CALL: Final = "bad_call"


class FlipCoin(Command, tag="coinflip_flip"):
    owner: str
    asset: str
    stake: int
    call: str


class FlipView(ResultData, tag="coinflip_flip"):
    flip_id: int
    owner: str
    asset: str
    stake: int
    call: str
    outcome: str
    payout: int  # what came back to the owner: 2 x stake when won, else 0


class CoinFlipped(msgspec.Struct, tag="coinflip_flipped", array_like=True, gc=False):
    seq: int
    flip: FlipView


class _State(msgspec.Struct, array_like=True):
    next_flip_id: int


def coin(command_id: str) -> str:
    """The side the coin shows for this command (deterministic: no randomness in the engine)."""
    return CALLS[hashlib.sha256(command_id.encode()).digest()[0] & 1]


class CoinflipProduct:
    name = PRODUCT
    commands: tuple[type[Command], ...] = (FlipCoin,)
    events: tuple[type, ...] = (CoinFlipped,)
    results: tuple[type[ResultData], ...] = (FlipView,)
    # A coin has no rules to pin in the log (decision 023): nothing to configure.
    config_type = None
    rules_version = 0
    config = None

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.next_flip_id = 1

    def handlers(self) -> dict[type[Command], Handler]:
        return {FlipCoin: self.flip}

    def configure(self, config: Any) -> None:
        raise AssertionError("the coin flip has no configuration")

    def flip(self, cmd: FlipCoin) -> FlipView | Reject:
        if cmd.call not in CALLS:
            return Reject(BAD_CALL, "heads or tails")
        if cmd.asset not in self.ledger.assets:
            return Reject(codes.UNKNOWN_ASSET, cmd.asset)
        if cmd.stake <= 0:
            return Reject(codes.AMOUNT_MUST_BE_POSITIVE)
        user = self.ledger.by_key.get((cmd.owner, cmd.asset))
        if user is None or user.available < cmd.stake:
            return Reject(codes.INSUFFICIENT_FUNDS, f"{cmd.asset} available is below the stake")
        house = self.ledger.by_key.get((HOUSE, cmd.asset)) or self.ledger.open_account(HOUSE, cmd.asset)
        assert not isinstance(house, str), house
        outcome = coin(cmd.command_id)
        won = outcome == cmd.call
        if won:
            moved = self.ledger.move(house, user, cmd.stake, "payout", cmd.seq)
        else:
            moved = self.ledger.move(user, house, cmd.stake, "bet", cmd.seq)
        assert not isinstance(moved, str), moved
        flip_id = self.next_flip_id
        self.next_flip_id = flip_id + 1
        self.engine.on_rollback(lambda: setattr(self, "next_flip_id", flip_id))
        payout = 2 * cmd.stake if won else 0
        view = FlipView(
            flip_id=flip_id,
            owner=cmd.owner,
            asset=cmd.asset,
            stake=cmd.stake,
            call=cmd.call,
            outcome=outcome,
            payout=payout,
        )
        self.engine.emit(CoinFlipped(cmd.seq, view))
        return view

    def snapshot_state(self) -> bytes:
        return msgspec.msgpack.encode(_State(self.next_flip_id))

    def restore_state(self, data: bytes) -> None:
        self.next_flip_id = msgspec.msgpack.decode(data, type=_State).next_flip_id

    def reconcile(self) -> list[Check]:
        """Nothing of its own: a flip settles at once, the house's account holds the difference."""
        return []

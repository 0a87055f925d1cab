"""The test-only product's engine part (tests/support/coinflip/core.py) on a real engine: the
ledger moves the stakes, the coin is deterministic, the state snapshots and restores."""

from __future__ import annotations

from cashmarkets.core import codes
from cashmarkets.core.commands import Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.ledger import HOUSE
from cashmarkets.core.results import Accepted, Rejected
from tests.support.coinflip.core import BAD_CALL, CoinFlipped, CoinflipProduct, FlipCoin, FlipView, coin
from tests.unit.engine_helpers import stamp_apply


def _engine() -> Engine:
    engine = Engine(products=[lambda e: CoinflipProduct(e)])
    stamp_apply(engine, Deposit(command_id="d", owner="ann", asset="USDC", amount=1_000))
    return engine


def _flip(
    engine: Engine, command_id: str, stake: int = 100, call: str = "heads"
) -> tuple[object, list[object]]:
    return stamp_apply(
        engine, FlipCoin(command_id=command_id, owner="ann", asset="USDC", stake=stake, call=call)
    )


def test_a_flip_moves_the_stake_between_the_user_and_the_house() -> None:
    engine = _engine()
    result, events = _flip(engine, "f1")
    assert isinstance(result, Accepted) and isinstance(result.data, FlipView)
    view = result.data
    assert view.outcome == coin("f1") and view.flip_id == 1
    won = view.outcome == "heads"
    assert view.payout == (200 if won else 0)
    assert engine.ledger.account("ann", "USDC").balance == (1_100 if won else 900)  # type: ignore[union-attr]
    assert engine.ledger.account(HOUSE, "USDC").balance == (-100 if won else 100)  # type: ignore[union-attr]
    assert [type(e) for e in events if isinstance(e, CoinFlipped)] == [CoinFlipped]


def test_refusals_change_nothing() -> None:
    engine = _engine()
    for cid, stake, call, code in (
        ("a", 100, "edge", BAD_CALL),
        ("b", 0, "heads", codes.AMOUNT_MUST_BE_POSITIVE),
        ("c", 5_000, "heads", codes.INSUFFICIENT_FUNDS),
    ):
        result, _ = _flip(engine, cid, stake, call)
        assert isinstance(result, Rejected) and result.code == code
    assert engine.ledger.account("ann", "USDC").balance == 1_000  # type: ignore[union-attr]


def test_the_coin_is_the_command_ids_and_the_state_restores() -> None:
    engine = _engine()
    outcomes = {coin(f"k{i}") for i in range(16)}
    assert outcomes == {"heads", "tails"}  # both sides come up
    for i in range(3):
        _flip(engine, f"k{i}", stake=10)
    copy = _engine()
    copy.restore(engine.snapshot())
    assert copy.state_hash() == engine.state_hash()
    result, _ = _flip(copy, "k3", stake=10)
    assert isinstance(result, Accepted) and result.data.flip_id == 4  # type: ignore[union-attr]

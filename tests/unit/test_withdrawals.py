"""Two-phase withdrawals: request holds the funds, complete posts them out, reject releases them."""

from __future__ import annotations

import pytest

from cashmarkets.core import codes
from cashmarkets.core.commands import (
    CompleteWithdrawal,
    Deposit,
    LegSpec,
    LinkedTransfers,
    PostHold,
    RejectWithdrawal,
    RequestWithdrawal,
    VoidHold,
)
from cashmarkets.core.engine import Engine
from cashmarkets.core.events import WithdrawalRequested, WithdrawalResolved
from cashmarkets.core.ledger import POST, VOID, WORLD, Transfer
from cashmarkets.core.results import Accepted, Rejected, WithdrawalState
from tests.unit.engine_helpers import stamp_apply


def funded(amount: int = 1_000) -> Engine:
    engine = Engine()
    result, _ = stamp_apply(engine, Deposit(command_id="fund", owner="alice", asset="USDC", amount=amount))
    assert isinstance(result, Accepted)
    return engine


def request(engine: Engine, cid: str = "w", amount: int = 300, destination: str = "0xabc") -> int:
    result, events = stamp_apply(
        engine,
        RequestWithdrawal(
            command_id=cid, owner="alice", asset="USDC", amount=amount, destination=destination
        ),
    )
    assert isinstance(result, Accepted) and isinstance(result.data, WithdrawalState)
    assert result.data.status == "pending"
    hold_id = result.data.hold_id
    assert [type(e) for e in events][-2:] == [Transfer, WithdrawalRequested]
    assert events[-1] == WithdrawalRequested(engine.seq, hold_id, "alice", "USDC", amount, destination)
    return hold_id


def alice(engine: Engine) -> tuple[int, int]:
    acc = engine.ledger.account("alice", "USDC")
    assert acc is not None
    return acc.balance, acc.available


def test_request_holds_and_complete_sends_the_money_out() -> None:
    engine = funded()
    hold_id = request(engine)
    assert alice(engine) == (1_000, 700)
    result, events = stamp_apply(engine, CompleteWithdrawal(command_id="c", hold_id=hold_id, reference="tx1"))
    assert isinstance(result, Accepted) and result.data == WithdrawalState(
        hold_id=hold_id, status="completed"
    )
    assert events[-1] == WithdrawalResolved(engine.seq, hold_id, "completed", "tx1")
    assert alice(engine) == (700, 700)
    world = engine.ledger.account(WORLD, "USDC")
    assert world is not None and world.balance == -700
    engine.ledger.check_invariants()


def test_reject_releases_the_funds() -> None:
    engine = funded()
    hold_id = request(engine)
    result, events = stamp_apply(
        engine, RejectWithdrawal(command_id="r", hold_id=hold_id, reason="sanctions")
    )
    assert isinstance(result, Accepted) and result.data == WithdrawalState(hold_id=hold_id, status="rejected")
    assert events[-1] == WithdrawalResolved(engine.seq, hold_id, "rejected", "sanctions")
    assert alice(engine) == (1_000, 1_000)


def test_a_withdrawal_resolves_once() -> None:
    engine = funded()
    hold_id = request(engine)
    stamp_apply(engine, CompleteWithdrawal(command_id="c1", hold_id=hold_id))
    for cmd in (
        CompleteWithdrawal(command_id="c2", hold_id=hold_id),
        RejectWithdrawal(command_id="r", hold_id=hold_id),
    ):
        result, events = stamp_apply(engine, cmd)
        assert isinstance(result, Rejected) and result.code == codes.WITHDRAWAL_NOT_FOUND
        assert events == []


@pytest.mark.parametrize(
    "make",
    [
        lambda h: PostHold(command_id="p", hold_id=h),
        lambda h: VoidHold(command_id="v", hold_id=h),
        lambda h: LinkedTransfers(command_id="l", legs=[LegSpec(kind=POST, pending_id=h)]),
        lambda h: LinkedTransfers(command_id="l", legs=[LegSpec(kind=VOID, pending_id=h)]),
    ],
    ids=["post", "void", "linked-post", "linked-void"],
)
def test_generic_hold_commands_cannot_resolve_a_withdrawal(make: object) -> None:
    engine = funded()
    hold_id = request(engine)
    result, _ = stamp_apply(engine, make(hold_id))  # type: ignore[operator]
    assert isinstance(result, Rejected) and result.code == codes.BAD_COMMAND
    assert alice(engine) == (1_000, 700)
    # ...and the withdrawal still completes normally afterwards.
    done, _ = stamp_apply(engine, CompleteWithdrawal(command_id="c", hold_id=hold_id))
    assert isinstance(done, Accepted)


@pytest.mark.parametrize(
    ("amount", "destination", "code"),
    [
        (2_000, "0xabc", codes.INSUFFICIENT_FUNDS),
        (0, "0xabc", codes.AMOUNT_MUST_BE_POSITIVE),
        (10, "", codes.BAD_DESTINATION),
        (10, "x" * 257, codes.BAD_DESTINATION),
        (10, "line\nbreak", codes.BAD_DESTINATION),
    ],
)
def test_bad_requests_are_rejected_without_a_trace(amount: int, destination: str, code: str) -> None:
    engine = funded()
    before = engine.products["ledger"].snapshot_state()
    result, events = stamp_apply(
        engine,
        RequestWithdrawal(
            command_id="w", owner="alice", asset="USDC", amount=amount, destination=destination
        ),
    )
    assert isinstance(result, Rejected) and result.code == code
    assert events == [] and alice(engine) == (1_000, 1_000)
    assert engine.products["ledger"].snapshot_state() == before


def test_pending_withdrawals_survive_snapshot_and_restore() -> None:
    engine = funded()
    first, second = request(engine, "w1", 100), request(engine, "w2", 200)
    copy = Engine()
    copy.restore(engine.snapshot())
    assert copy.state_hash() == engine.state_hash()
    result, _ = stamp_apply(copy, CompleteWithdrawal(command_id="c", hold_id=second))
    assert isinstance(result, Accepted)
    assert copy.products["ledger"].withdrawals == {first: "alice"}

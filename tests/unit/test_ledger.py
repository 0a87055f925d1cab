"""The double-entry ledger: every result code, holds, linked batches and balances, both on the Ledger
class directly and through the engine's ledger commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cashmarkets.core import codes
from cashmarkets.core import ledger as ledger_module
from cashmarkets.core.commands import (
    Command,
    Deposit,
    LegSpec,
    LinkedTransfers,
    OpenAccount,
    PlaceHold,
    PostHold,
    TransferFunds,
    VoidHold,
    Withdraw,
)
from cashmarkets.core.engine import Engine
from cashmarkets.core.events import AccountCreated
from cashmarkets.core.ledger import (
    HOLD_PENDING,
    HOLD_POSTED,
    HOLD_VOIDED,
    HOUSE,
    NO_CREDIT_EXCESS,
    NO_OVERDRAFT,
    PENDING,
    POST,
    SINGLE,
    TRANSFERS_PER_BATCH_MAX,
    VOID,
    WORLD,
    Account,
    LedgerFailure,
    Leg,
    Transfer,
    escrow,
)
from cashmarkets.core.results import Accepted, AccountOpened, Rejected, TransfersDone
from tests.support.ledger_book import Book

from .engine_helpers import ledger_bytes, stamp_apply, totals

# ---- fixtures and small helpers ------------------------------------------------------------------


@pytest.fixture
def book() -> Book:
    return Book()


def expect_code(book: Book, code: str, call: Callable[[], object]) -> None:
    """call() returns `code` (or a LedgerFailure with it) and changes nothing, emitting nothing."""
    before = ledger_bytes(book.ledger)
    events_before = list(book.events)
    out = call()
    got = out.code if isinstance(out, LedgerFailure) else out
    assert got == code
    assert ledger_bytes(book.ledger) == before
    assert book.events == events_before
    book.ledger.check_invariants()


def funded(amount: int = 1000, owner: str = "alice", asset: str = "USD") -> Engine:
    engine = Engine()
    result, _ = stamp_apply(
        engine, Deposit(command_id=f"fund-{owner}", owner=owner, asset=asset, amount=amount)
    )
    assert isinstance(result, Accepted)
    return engine


def expect_rejected(engine: Engine, cmd: Command, code: str) -> Rejected:
    """Apply cmd: it is rejected with `code`, the ledger is unchanged and no event is emitted."""
    before = ledger_bytes(engine)
    products_before = {name: p.snapshot_state() for name, p in engine.products.items()}
    result, events = stamp_apply(engine, cmd)
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    assert result.seq == cmd.seq and result.command_id == cmd.command_id
    assert events == []
    assert ledger_bytes(engine) == before
    assert {name: p.snapshot_state() for name, p in engine.products.items()} == products_before
    engine.ledger.check_invariants()
    return result


def accepted(engine: Engine, cmd: Command) -> tuple[TransfersDone | AccountOpened | None, list[Any]]:
    result, events = stamp_apply(engine, cmd)
    assert isinstance(result, Accepted), result
    engine.ledger.check_invariants()
    return result.data, events  # type: ignore[return-value]


def hold_id_of(data: object) -> int:
    assert isinstance(data, TransfersDone)
    return data.transfer_ids[0]


# ---- every result code on the Ledger class --------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, -1000])
def test_move_amount_must_be_positive(book: Book, amount: int) -> None:
    expect_code(
        book,
        codes.AMOUNT_MUST_BE_POSITIVE,
        lambda: book.ledger.move(book.alice, book.bob, amount, "transfer", 2),
    )
    expect_code(
        book,
        codes.AMOUNT_MUST_BE_POSITIVE,
        lambda: book.ledger.move(book.alice, book.bob, amount, "transfer", 2, pending=True),
    )


def test_amount_is_checked_before_everything_else(book: Book) -> None:
    # Bad amount + bad code + same account + mismatched asset: the first check in precedence wins.
    expect_code(
        book, codes.AMOUNT_MUST_BE_POSITIVE, lambda: book.ledger.move(book.alice, book.alice, 0, "nope", 2)
    )
    expect_code(
        book, codes.UNKNOWN_TRANSFER_CODE, lambda: book.ledger.move(book.alice, book.alice, 5, "nope", 2)
    )
    expect_code(
        book, codes.ACCOUNTS_MUST_BE_DIFFERENT, lambda: book.ledger.move(book.bob, book.bob, 5000, "fee", 2)
    )


def test_open_account_unknown_asset(book: Book) -> None:
    expect_code(book, codes.UNKNOWN_ASSET, lambda: book.ledger.open_account("dave", "XYZ"))
    # Asset is checked before the owner.
    expect_code(book, codes.UNKNOWN_ASSET, lambda: book.ledger.open_account("", "XYZ"))


@pytest.mark.parametrize("owner", ["", "x" * 129, "@" + "y" * 128])
def test_open_account_bad_owner(book: Book, owner: str) -> None:
    expect_code(book, codes.BAD_OWNER, lambda: book.ledger.open_account(owner, "USD"))


def test_open_account_owner_length_limit_is_inclusive(book: Book) -> None:
    acc = book.ledger.open_account("x" * 128, "USD")
    assert isinstance(acc, Account)
    assert acc.owner == "x" * 128


def test_open_account_returns_the_existing_account(book: Book) -> None:
    before = ledger_bytes(book.ledger)
    again = book.ledger.open_account("alice", "USD", flags=0)
    assert again is book.alice
    assert again.flags == NO_OVERDRAFT  # the existing flags are kept
    assert ledger_bytes(book.ledger) == before


def test_open_account_default_flags(book: Book) -> None:
    assert book.world.flags == 0
    assert book.open(HOUSE, "USD").flags == 0
    assert book.alice.flags == NO_OVERDRAFT
    assert book.open("@fees", "USD").flags == NO_OVERDRAFT
    assert book.open(escrow("dice"), "USD").flags == NO_OVERDRAFT
    assert escrow("dice") == "@escrow:dice"


def test_accounts_max_reached(book: Book, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "ACCOUNTS_MAX", len(book.ledger.accounts))
    expect_code(book, codes.ACCOUNTS_MAX_REACHED, lambda: book.ledger.open_account("dave", "USD"))
    # An existing account is still returned at the limit.
    assert book.ledger.open_account("alice", "USD") is book.alice


def test_move_unknown_transfer_code(book: Book) -> None:
    expect_code(
        book, codes.UNKNOWN_TRANSFER_CODE, lambda: book.ledger.move(book.alice, book.bob, 5, "gift", 2)
    )
    expect_code(book, codes.UNKNOWN_TRANSFER_CODE, lambda: book.ledger.move(book.alice, book.bob, 5, "", 2))


def test_move_accounts_must_be_different(book: Book) -> None:
    expect_code(
        book,
        codes.ACCOUNTS_MUST_BE_DIFFERENT,
        lambda: book.ledger.move(book.alice, book.alice, 5, "transfer", 2),
    )
    expect_code(
        book,
        codes.ACCOUNTS_MUST_BE_DIFFERENT,
        lambda: book.ledger.move(book.alice, book.alice, 5, "hold", 2, pending=True),
    )


def test_move_assets_must_match(book: Book) -> None:
    expect_code(
        book, codes.ASSETS_MUST_MATCH, lambda: book.ledger.move(book.alice, book.alice_btc, 5, "transfer", 2)
    )


def test_move_insufficient_funds(book: Book) -> None:
    expect_code(
        book, codes.INSUFFICIENT_FUNDS, lambda: book.ledger.move(book.alice, book.bob, 1001, "transfer", 2)
    )
    expect_code(
        book, codes.INSUFFICIENT_FUNDS, lambda: book.ledger.move(book.bob, book.alice, 1, "transfer", 2)
    )
    # A hold counts against what may still be spent.
    book.hold(book.alice, book.bob, 600)
    expect_code(
        book, codes.INSUFFICIENT_FUNDS, lambda: book.ledger.move(book.alice, book.bob, 401, "transfer", 2)
    )
    expect_code(
        book,
        codes.INSUFFICIENT_FUNDS,
        lambda: book.ledger.move(book.alice, book.bob, 401, "hold", 2, pending=True),
    )
    # Exactly the available amount is fine.
    assert isinstance(book.ledger.move(book.alice, book.bob, 400, "transfer", 2), Transfer)
    assert book.alice.available == 0
    book.ledger.check_invariants()


def test_move_exceeds_debits_on_a_credit_limited_account(book: Book) -> None:
    limited = book.open("limited", "USD", flags=NO_CREDIT_EXCESS)
    expect_code(book, codes.EXCEEDS_DEBITS, lambda: book.ledger.move(book.alice, limited, 1, "transfer", 2))
    assert isinstance(book.ledger.move(limited, book.world, 50, "transfer", 2), Transfer)
    assert isinstance(book.ledger.move(book.alice, limited, 50, "transfer", 2), Transfer)
    expect_code(book, codes.EXCEEDS_DEBITS, lambda: book.ledger.move(book.alice, limited, 1, "transfer", 2))


def test_execute_debit_and_credit_account_not_found(book: Book) -> None:
    missing = 999
    expect_code(
        book,
        codes.DEBIT_ACCOUNT_NOT_FOUND,
        lambda: book.ledger.execute([Leg(SINGLE, missing, book.bob.id, 5)], 2),
    )
    expect_code(
        book,
        codes.CREDIT_ACCOUNT_NOT_FOUND,
        lambda: book.ledger.execute([Leg(PENDING, book.alice.id, missing, 5)], 2),
    )
    # Both missing: the debit side is reported.
    expect_code(book, codes.DEBIT_ACCOUNT_NOT_FOUND, lambda: book.ledger.execute([Leg(SINGLE, 0, 0, 5)], 2))


def test_resolve_pending_transfer_not_found(book: Book) -> None:
    expect_code(book, codes.PENDING_TRANSFER_NOT_FOUND, lambda: book.ledger.resolve(999, 0, 2, post=True))
    expect_code(book, codes.PENDING_TRANSFER_NOT_FOUND, lambda: book.ledger.resolve(999, 0, 2, post=False))
    # A SINGLE transfer's id is not a hold.
    single = book.ledger.move(book.alice, book.bob, 5, "transfer", 2)
    assert isinstance(single, Transfer)
    expect_code(
        book, codes.PENDING_TRANSFER_NOT_FOUND, lambda: book.ledger.resolve(single.id, 0, 2, post=True)
    )


def test_resolve_already_posted_and_already_voided(book: Book) -> None:
    posted = book.hold(book.alice, book.bob, 100)
    voided = book.hold(book.alice, book.bob, 200)
    assert isinstance(book.ledger.resolve(posted, 40, 3, post=True), Transfer)
    assert isinstance(book.ledger.resolve(voided, 0, 3, post=False), Transfer)
    for post in (True, False):
        expect_code(
            book, codes.ALREADY_POSTED, lambda post=post: book.ledger.resolve(posted, 0, 4, post=post)
        )
        expect_code(
            book, codes.ALREADY_VOIDED, lambda post=post: book.ledger.resolve(voided, 0, 4, post=post)
        )


def test_resolve_exceeds_pending_amount_and_negative_post(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 100)
    expect_code(book, codes.EXCEEDS_PENDING_AMOUNT, lambda: book.ledger.resolve(hold_id, 101, 3, post=True))
    expect_code(book, codes.AMOUNT_MUST_BE_POSITIVE, lambda: book.ledger.resolve(hold_id, -1, 3, post=True))
    # The hold is still pending and can be posted in full afterwards.
    assert book.ledger.holds[hold_id].status == HOLD_PENDING
    out = book.ledger.resolve(hold_id, 100, 3, post=True)
    assert isinstance(out, Transfer) and out.amount == 100


def test_void_ignores_the_amount(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 100)
    out = book.ledger.resolve(hold_id, 5000, 3, post=False)
    assert isinstance(out, Transfer)
    assert (out.kind, out.amount, out.pending_id) == (VOID, 0, hold_id)
    assert totals(book.ledger, "alice", "USD") == (0, 1000, 0, 0)


@pytest.mark.parametrize("count", [0, TRANSFERS_PER_BATCH_MAX + 1])
def test_execute_too_many_transfers(book: Book, count: int) -> None:
    legs = [Leg(SINGLE, book.alice.id, book.bob.id, 1)] * count
    out = book.ledger.execute(legs, 2)
    assert out == LedgerFailure(0, codes.TOO_MANY_TRANSFERS)
    expect_code(book, codes.TOO_MANY_TRANSFERS, lambda: book.ledger.execute(legs, 2))


def test_execute_accepts_exactly_the_batch_limit(book: Book) -> None:
    legs = [Leg(SINGLE, book.alice.id, book.bob.id, 1)] * TRANSFERS_PER_BATCH_MAX
    out = book.ledger.execute(legs, 2)
    assert isinstance(out, list) and len(out) == TRANSFERS_PER_BATCH_MAX
    assert book.bob.balance == TRANSFERS_PER_BATCH_MAX


def test_execute_unknown_kind_is_a_bug(book: Book) -> None:
    with pytest.raises(AssertionError):
        book.ledger.execute([Leg(7, book.alice.id, book.bob.id, 1)], 2)


# ---- every result code through the engine ----------------------------------------------------------


def test_engine_amount_must_be_positive() -> None:
    engine = funded()
    expect_rejected(
        engine, Deposit(command_id="d0", owner="alice", asset="USD", amount=0), codes.AMOUNT_MUST_BE_POSITIVE
    )
    expect_rejected(
        engine, Withdraw(command_id="w", owner="alice", asset="USD", amount=-5), codes.AMOUNT_MUST_BE_POSITIVE
    )
    expect_rejected(
        engine,
        TransferFunds(command_id="t", from_owner="alice", to_owner="bob", asset="USD", amount=0),
        codes.AMOUNT_MUST_BE_POSITIVE,
    )
    expect_rejected(
        engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=0), codes.AMOUNT_MUST_BE_POSITIVE
    )
    hold_id = hold_id_of(
        accepted(engine, PlaceHold(command_id="h2", owner="alice", asset="USD", amount=10))[0]
    )
    expect_rejected(
        engine, PostHold(command_id="p", hold_id=hold_id, amount=-1), codes.AMOUNT_MUST_BE_POSITIVE
    )


def test_engine_unknown_asset() -> None:
    engine = funded()
    expect_rejected(
        engine, Deposit(command_id="d", owner="alice", asset="XYZ", amount=5), codes.UNKNOWN_ASSET
    )
    expect_rejected(
        engine, Withdraw(command_id="w", owner="alice", asset="XYZ", amount=5), codes.UNKNOWN_ASSET
    )
    expect_rejected(engine, OpenAccount(command_id="o", owner="alice", asset="XYZ"), codes.UNKNOWN_ASSET)
    expect_rejected(
        engine,
        TransferFunds(command_id="t", from_owner="alice", to_owner="bob", asset="XYZ", amount=5),
        codes.UNKNOWN_ASSET,
    )


def test_engine_unknown_transfer_code_rolls_back_opened_accounts() -> None:
    # The deposit opens @world and dave's account before the code check fails: both are undone.
    engine = Engine()
    expect_rejected(
        engine,
        Deposit(command_id="d", owner="dave", asset="USD", amount=5, code="gift"),
        codes.UNKNOWN_TRANSFER_CODE,
    )
    assert engine.ledger.accounts == {}
    assert engine.ledger.next_account_id == 1
    engine = funded()
    expect_rejected(
        engine,
        TransferFunds(
            command_id="t", from_owner="alice", to_owner="erin", asset="USD", amount=5, code="gift"
        ),
        codes.UNKNOWN_TRANSFER_CODE,
    )
    assert engine.ledger.account("erin", "USD") is None


def test_engine_accounts_must_be_different() -> None:
    engine = funded()
    expect_rejected(
        engine,
        TransferFunds(command_id="t", from_owner="alice", to_owner="alice", asset="USD", amount=5),
        codes.ACCOUNTS_MUST_BE_DIFFERENT,
    )
    expect_rejected(
        engine,
        PlaceHold(command_id="h", owner="alice", to_owner="alice", asset="USD", amount=5),
        codes.ACCOUNTS_MUST_BE_DIFFERENT,
    )


def test_engine_insufficient_funds() -> None:
    engine = funded(1000)
    expect_rejected(
        engine, Withdraw(command_id="w", owner="alice", asset="USD", amount=1001), codes.INSUFFICIENT_FUNDS
    )
    # Never funded: no account at all.
    expect_rejected(
        engine, Withdraw(command_id="w2", owner="nobody", asset="USD", amount=1), codes.INSUFFICIENT_FUNDS
    )
    # Funded in another asset only.
    expect_rejected(
        engine, Withdraw(command_id="w3", owner="alice", asset="BTC", amount=1), codes.INSUFFICIENT_FUNDS
    )
    expect_rejected(
        engine,
        TransferFunds(command_id="t", from_owner="alice", to_owner="newbie", asset="USD", amount=1001),
        codes.INSUFFICIENT_FUNDS,
    )
    assert engine.ledger.account("newbie", "USD") is None
    accepted(engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=900))
    expect_rejected(
        engine, PlaceHold(command_id="h2", owner="alice", asset="USD", amount=101), codes.INSUFFICIENT_FUNDS
    )
    expect_rejected(
        engine, Withdraw(command_id="w4", owner="alice", asset="USD", amount=101), codes.INSUFFICIENT_FUNDS
    )
    accepted(engine, Withdraw(command_id="w5", owner="alice", asset="USD", amount=100))
    assert totals(engine.ledger, "alice", "USD") == (100, 1000, 900, 0)


def test_engine_hold_resolution_codes() -> None:
    engine = funded()
    expect_rejected(engine, PostHold(command_id="p0", hold_id=999), codes.PENDING_TRANSFER_NOT_FOUND)
    expect_rejected(engine, VoidHold(command_id="v0", hold_id=999), codes.PENDING_TRANSFER_NOT_FOUND)
    a = hold_id_of(accepted(engine, PlaceHold(command_id="ha", owner="alice", asset="USD", amount=100))[0])
    b = hold_id_of(accepted(engine, PlaceHold(command_id="hb", owner="alice", asset="USD", amount=100))[0])
    expect_rejected(engine, PostHold(command_id="p1", hold_id=a, amount=101), codes.EXCEEDS_PENDING_AMOUNT)
    accepted(engine, PostHold(command_id="p2", hold_id=a, amount=0))
    accepted(engine, VoidHold(command_id="v1", hold_id=b))
    expect_rejected(engine, PostHold(command_id="p3", hold_id=a), codes.ALREADY_POSTED)
    expect_rejected(engine, VoidHold(command_id="v2", hold_id=a), codes.ALREADY_POSTED)
    expect_rejected(engine, PostHold(command_id="p4", hold_id=b), codes.ALREADY_VOIDED)
    expect_rejected(engine, VoidHold(command_id="v3", hold_id=b), codes.ALREADY_VOIDED)


@pytest.mark.parametrize("count", [0, TRANSFERS_PER_BATCH_MAX + 1])
def test_engine_too_many_transfers(count: int) -> None:
    engine = funded()
    legs = [LegSpec(kind=SINGLE, from_owner="alice", to_owner="bob", asset="USD", amount=1)] * count
    expect_rejected(engine, LinkedTransfers(command_id="l", legs=legs), codes.TOO_MANY_TRANSFERS)


def test_engine_bad_command_for_unknown_leg_kind() -> None:
    engine = funded()
    legs = [
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="bob", asset="USD", amount=1),
        LegSpec(kind=9, from_owner="alice", to_owner="bob", asset="USD", amount=1),
    ]
    expect_rejected(engine, LinkedTransfers(command_id="l", legs=legs), codes.BAD_COMMAND)


@pytest.mark.parametrize(
    "cmd",
    [
        Deposit(command_id="x", owner=HOUSE, asset="USD", amount=5),
        Deposit(command_id="x", owner="@anything", asset="USD", amount=5),
        Deposit(command_id="x", owner="", asset="USD", amount=5),
        Deposit(command_id="x", owner="z" * 129, asset="USD", amount=5),
        Withdraw(command_id="x", owner=WORLD, asset="USD", amount=5),
        Withdraw(command_id="x", owner=HOUSE, asset="USD", amount=5),
        OpenAccount(command_id="x", owner="@x", asset="USD"),
        OpenAccount(command_id="x", owner=escrow("dice"), asset="USD"),
        OpenAccount(command_id="x", owner="", asset="USD"),
        TransferFunds(command_id="x", from_owner="alice", to_owner=HOUSE, asset="USD", amount=5),
        TransferFunds(command_id="x", from_owner=HOUSE, to_owner="alice", asset="USD", amount=5),
        TransferFunds(command_id="x", from_owner=WORLD, to_owner="alice", asset="USD", amount=5),
        TransferFunds(command_id="x", from_owner="alice", to_owner="", asset="USD", amount=5),
        PlaceHold(command_id="x", owner=HOUSE, to_owner="alice", asset="USD", amount=5),
        PlaceHold(command_id="x", owner="alice", to_owner="", asset="USD", amount=5),
    ],
    ids=lambda cmd: type(cmd).__name__,
)
def test_engine_bad_owner(cmd: Command) -> None:
    engine = funded()
    accepted(engine, Deposit(command_id="fund-bob", owner="bob", asset="USD", amount=5))
    expect_rejected(engine, cmd, codes.BAD_OWNER)


@pytest.mark.parametrize("system", [WORLD, HOUSE])
def test_engine_linked_legs_cannot_debit_system_accounts(system: str) -> None:
    engine = funded()
    legs = [LegSpec(kind=SINGLE, from_owner=system, to_owner="alice", asset="USD", amount=1_000_000)]
    expect_rejected(engine, LinkedTransfers(command_id="mint", legs=legs), codes.BAD_OWNER)


def test_engine_open_account() -> None:
    engine = Engine()
    data, events = accepted(engine, OpenAccount(command_id="o1", owner="alice", asset="BTC"))
    assert isinstance(data, AccountOpened)
    assert (data.owner, data.asset, data.created) == ("alice", "BTC", True)
    assert events == [AccountCreated(1, data.account_id, "alice", "BTC", NO_OVERDRAFT)]
    again, events = accepted(engine, OpenAccount(command_id="o2", owner="alice", asset="BTC"))
    assert isinstance(again, AccountOpened)
    assert (again.account_id, again.created) == (data.account_id, False)
    assert events == []


# ---- holds -----------------------------------------------------------------------------------------


def test_hold_then_post_in_full() -> None:
    engine = funded(1000)
    data, events = accepted(engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=300))
    hold_id = hold_id_of(data)
    house = engine.ledger.account(HOUSE, "USD")
    assert house is not None
    assert [type(e) for e in events] == [AccountCreated, Transfer]
    assert totals(engine.ledger, "alice", "USD") == (0, 1000, 300, 0)
    assert totals(engine.ledger, HOUSE, "USD") == (0, 0, 0, 300)
    data, events = accepted(engine, PostHold(command_id="p", hold_id=hold_id, amount=0))
    assert isinstance(data, TransfersDone) and list(data.transfer_ids) == [hold_id + 1]
    alice = engine.ledger.account("alice", "USD")
    assert alice is not None
    assert events == [Transfer(3, hold_id + 1, POST, alice.id, house.id, "USD", 300, "hold", hold_id)]
    assert totals(engine.ledger, "alice", "USD") == (300, 1000, 0, 0)
    assert totals(engine.ledger, HOUSE, "USD") == (0, 300, 0, 0)
    hold = engine.ledger.holds[hold_id]
    assert (hold.status, hold.posted_amount, hold.amount) == (HOLD_POSTED, 300, 300)


def test_hold_then_partial_post_releases_the_rest() -> None:
    engine = funded(1000)
    hold_id = hold_id_of(
        accepted(engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=300))[0]
    )
    _, events = accepted(engine, PostHold(command_id="p", hold_id=hold_id, amount=120))
    assert [e.amount for e in events] == [120]
    assert totals(engine.ledger, "alice", "USD") == (120, 1000, 0, 0)
    assert totals(engine.ledger, HOUSE, "USD") == (0, 120, 0, 0)
    alice = engine.ledger.account("alice", "USD")
    assert alice is not None and alice.available == 880 and alice.balance == 880
    hold = engine.ledger.holds[hold_id]
    assert (hold.status, hold.posted_amount) == (HOLD_POSTED, 120)


def test_hold_then_post_exact_amount() -> None:
    engine = funded(1000)
    hold_id = hold_id_of(
        accepted(engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=300))[0]
    )
    accepted(engine, PostHold(command_id="p", hold_id=hold_id, amount=300))
    assert totals(engine.ledger, "alice", "USD") == (300, 1000, 0, 0)


@pytest.mark.parametrize("to_owner", [HOUSE, "bob", escrow("dice")])
def test_hold_then_void_restores_the_prior_totals(to_owner: str) -> None:
    engine = funded(1000)
    # The credit account exists before the hold, so "prior" covers both accounts' four totals.
    accepted(engine, Deposit(command_id="fund-carol", owner="carol", asset="USD", amount=50))
    accepted(engine, PlaceHold(command_id="h0", owner="carol", to_owner=to_owner, asset="USD", amount=20))
    before = (totals(engine.ledger, "alice", "USD"), totals(engine.ledger, to_owner, "USD"))
    assert before[1] == (0, 0, 0, 20)
    hold_id = hold_id_of(
        accepted(
            engine, PlaceHold(command_id="h", owner="alice", to_owner=to_owner, asset="USD", amount=300)
        )[0]
    )
    assert (totals(engine.ledger, "alice", "USD"), totals(engine.ledger, to_owner, "USD")) != before
    _, events = accepted(engine, VoidHold(command_id="v", hold_id=hold_id))
    assert [(e.kind, e.amount, e.pending_id) for e in events] == [(VOID, 0, hold_id)]
    assert (totals(engine.ledger, "alice", "USD"), totals(engine.ledger, to_owner, "USD")) == before
    assert engine.ledger.holds[hold_id].status == HOLD_VOIDED


def test_hold_to_a_user_credits_pending_only() -> None:
    engine = funded(1000)
    hold_id = hold_id_of(
        accepted(engine, PlaceHold(command_id="h", owner="alice", to_owner="bob", asset="USD", amount=300))[0]
    )
    bob = engine.ledger.account("bob", "USD")
    assert bob is not None
    assert (bob.balance, bob.available, bob.credits_pending) == (0, 0, 300)
    # bob cannot spend money that is only held for him.
    expect_rejected(
        engine, Withdraw(command_id="w", owner="bob", asset="USD", amount=1), codes.INSUFFICIENT_FUNDS
    )
    accepted(engine, PostHold(command_id="p", hold_id=hold_id))
    accepted(engine, Withdraw(command_id="w2", owner="bob", asset="USD", amount=300))


def test_balance_and_available() -> None:
    engine = funded(1000)
    alice = engine.ledger.account("alice", "USD")
    assert alice is not None
    assert (alice.balance, alice.available) == (1000, 1000)
    hold_id = hold_id_of(
        accepted(engine, PlaceHold(command_id="h", owner="alice", asset="USD", amount=300))[0]
    )
    assert (alice.balance, alice.available) == (1000, 700)
    accepted(engine, PostHold(command_id="p", hold_id=hold_id, amount=100))
    assert (alice.balance, alice.available) == (900, 900)


# ---- linked batches ---------------------------------------------------------------------------------


def test_linked_batch_with_a_failing_leg_applies_nothing() -> None:
    engine = funded(1000)
    legs = [
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="bob", asset="USD", amount=100),
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="carol", asset="USD", amount=5000),
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="dave", asset="USD", amount=1),
    ]
    next_id_before = engine.ledger.next_transfer_id
    before = ledger_bytes(engine)
    result = expect_rejected(engine, LinkedTransfers(command_id="l", legs=legs), codes.INSUFFICIENT_FUNDS)
    assert result.detail == "leg 1"
    assert ledger_bytes(engine) == before
    assert engine.ledger.next_transfer_id == next_id_before
    # The accounts the batch opened (bob, carol, dave) were rolled back too.
    assert [engine.ledger.account(o, "USD") for o in ("bob", "carol", "dave")] == [None, None, None]


def test_linked_batch_failing_leg_index_for_hold_legs() -> None:
    engine = funded(1000)
    next_id = engine.ledger.next_transfer_id
    legs = [
        LegSpec(kind=PENDING, from_owner="alice", to_owner=HOUSE, asset="USD", amount=100, code="hold"),
        LegSpec(kind=POST, pending_id=next_id, amount=40),
        LegSpec(kind=VOID, pending_id=next_id),  # already posted by leg 1
    ]
    result = expect_rejected(engine, LinkedTransfers(command_id="l", legs=legs), codes.ALREADY_POSTED)
    assert result.detail == "leg 2"
    assert next_id not in engine.ledger.holds


def test_linked_batch_success_emits_one_transfer_per_leg_in_order() -> None:
    engine = funded(1000)
    accepted(engine, Deposit(command_id="fund-bob", owner="bob", asset="USD", amount=10))
    accepted(engine, PlaceHold(command_id="h0", owner="bob", asset="USD", amount=5))  # opens @house
    ledger = engine.ledger
    alice, bob, house = (ledger.account(o, "USD") for o in ("alice", "bob", HOUSE))
    assert alice is not None and bob is not None and house is not None
    first = ledger.next_transfer_id
    legs = [
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="bob", asset="USD", amount=100),
        LegSpec(kind=PENDING, from_owner="alice", to_owner=HOUSE, asset="USD", amount=300, code="bet"),
        LegSpec(kind=POST, pending_id=first + 1, amount=200),
        LegSpec(kind=SINGLE, from_owner="bob", to_owner="alice", asset="USD", amount=105),
        LegSpec(kind=VOID, pending_id=first - 1),  # bob's earlier hold
    ]
    cmd = LinkedTransfers(command_id="l", legs=legs)
    data, events = accepted(engine, cmd)
    assert isinstance(data, TransfersDone)
    assert list(data.transfer_ids) == list(range(first, first + 5))
    seq = cmd.seq
    assert events == [
        Transfer(seq, first, SINGLE, alice.id, bob.id, "USD", 100, "transfer"),
        Transfer(seq, first + 1, PENDING, alice.id, house.id, "USD", 300, "bet"),
        Transfer(seq, first + 2, POST, alice.id, house.id, "USD", 200, "bet", first + 1),
        Transfer(seq, first + 3, SINGLE, bob.id, alice.id, "USD", 105, "transfer"),
        Transfer(seq, first + 4, VOID, bob.id, house.id, "USD", 0, "hold", first - 1),
    ]
    assert totals(ledger, "alice", "USD") == (300, 1105, 0, 0)
    assert totals(ledger, "bob", "USD") == (105, 110, 0, 0)


def test_linked_batch_opens_credit_accounts_and_reports_them_first() -> None:
    engine = funded(1000)
    legs = [
        LegSpec(kind=SINGLE, from_owner="alice", to_owner="erin", asset="USD", amount=10),
        LegSpec(kind=SINGLE, from_owner="erin", to_owner="fred", asset="USD", amount=4),
    ]
    _, events = accepted(engine, LinkedTransfers(command_id="l", legs=legs))
    assert [type(e) for e in events] == [AccountCreated, AccountCreated, Transfer, Transfer]
    assert [e.owner for e in events[:2]] == ["erin", "fred"]
    assert totals(engine.ledger, "erin", "USD") == (4, 10, 0, 0)
    assert totals(engine.ledger, "fred", "USD") == (0, 4, 0, 0)


def test_ledger_execute_failure_undoes_earlier_legs_and_their_events(book: Book) -> None:
    hold_id = book.ledger.next_transfer_id + 1
    legs = [
        Leg(SINGLE, book.alice.id, book.bob.id, 100),
        Leg(PENDING, book.alice.id, book.carol.id, 200, "hold"),
        Leg(POST, pending_id=hold_id, amount=50),
        Leg(SINGLE, book.bob.id, book.carol.id, 101),  # bob only has 100
    ]
    before = ledger_bytes(book.ledger)
    out = book.ledger.execute(legs, 2)
    assert out == LedgerFailure(3, codes.INSUFFICIENT_FUNDS)
    assert ledger_bytes(book.ledger) == before
    assert book.events == []
    # The same batch with the last leg fixed goes through in full.
    legs[3] = Leg(SINGLE, book.bob.id, book.carol.id, 100)
    done = book.ledger.execute(legs, 2)
    assert isinstance(done, list)
    assert [t.kind for t in done] == [SINGLE, PENDING, POST, SINGLE]
    assert book.events == done
    assert totals(book.ledger, "carol", "USD") == (0, 150, 0, 0)
    book.ledger.check_invariants()


def test_ledger_rollback_undoes_a_whole_command(book: Book) -> None:
    old_hold = book.hold(book.alice, book.bob, 100)
    book.ledger.begin([])
    before = ledger_bytes(book.ledger)
    dave = book.open("dave", "USD")
    assert isinstance(book.ledger.move(book.alice, dave, 10, "transfer", 3), Transfer)
    assert isinstance(book.ledger.resolve(old_hold, 30, 3, post=True), Transfer)
    new_hold = book.hold(book.alice, dave, 5)
    assert ledger_bytes(book.ledger) != before
    book.ledger.rollback()
    assert ledger_bytes(book.ledger) == before
    assert new_hold not in book.ledger.holds
    assert book.ledger.holds[old_hold].status == HOLD_PENDING
    book.ledger.check_invariants()


def test_check_invariants_catches_a_broken_ledger(book: Book) -> None:
    book.ledger.check_invariants()
    book.alice.credits_posted += 1  # money from nowhere
    with pytest.raises(AssertionError):
        book.ledger.check_invariants()

"""The double-entry ledger every product moves money through, shaped like TigerBeetle's.

    Account   (owner, asset) -> running totals debits/credits x posted/pending; balance is derived
    Transfer  one movement between two accounts of one asset, with a code:
                SINGLE   posted at once
                PENDING  a hold: counted in the *_pending totals until resolved
                POST     resolves a hold, fully or partly (the rest is released)
                VOID     resolves a hold by releasing all of it
                POST_PART / VOID_PART  post or release part of a hold and keep the rest pending:
                         a resting order fills in pieces (beyond TigerBeetle, whose holds resolve
                         once); the hold resolves when nothing is left pending
                HOLD_MORE  adds to a pending hold (an order amended to need more)

Invariants (checked by tests, asserted where cheap):
  - per asset, the sum over accounts of (credits - debits) is zero, for posted and for pending;
  - an account flagged NO_OVERDRAFT never has debits_posted + debits_pending > credits_posted;
  - a hold resolves at most once.

Expected failures return a code from `codes`; assertions guard what must never happen. Every
mutation is recorded in an undo journal so the engine can roll a whole command back.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, IntFlag
from typing import Final

import msgspec

from cashmarkets.core import codes

ACCOUNTS_MAX: Final = 10_000_000
# Every running total fits a signed 64-bit integer: a PostgreSQL BIGINT and a MessagePack int.
# Asset decimals are chosen so that this is ample (ETH in gwei: 9.2e9 ETH).
TOTAL_MAX: Final = 2**63 - 1
TRANSFERS_PER_BATCH_MAX: Final = 64
OWNER_LENGTH_MAX: Final = 128

# System owners start with '@', so no user name can collide with them.
WORLD: Final = "@world"  # money outside the system: deposits come from it, withdrawals go to it
HOUSE: Final = "@house"  # the operator's own book for games
FEES: Final = "@fees"


def escrow(product: str) -> str:
    """The owner name of a product's escrow account (funds in use by that product)."""
    return f"@escrow:{product}"


class AccountFlags(IntFlag):
    NONE = 0
    # debits_posted + debits_pending must not exceed credits_posted: user money cannot go negative.
    NO_OVERDRAFT = 1
    # credits_posted + credits_pending must not exceed debits_posted.
    NO_CREDIT_EXCESS = 2


# Plain ints on the hot path: IntEnum/IntFlag arithmetic costs ~1 µs per operation in CPython.
NO_OVERDRAFT: Final = 1
NO_CREDIT_EXCESS: Final = 2
SINGLE: Final = 0
PENDING: Final = 1
POST: Final = 2
VOID: Final = 3
POST_PART: Final = 4
VOID_PART: Final = 5
HOLD_MORE: Final = 6
HOLD_PENDING: Final = 0
HOLD_POSTED: Final = 1
HOLD_VOIDED: Final = 2


class TransferKind(IntEnum):
    SINGLE = 0
    PENDING = 1
    POST = 2
    VOID = 3
    POST_PART = 4
    VOID_PART = 5
    HOLD_MORE = 6


class HoldStatus(IntEnum):
    PENDING = 0
    POSTED = 1
    VOIDED = 2


TRANSFER_CODES: Final = frozenset(
    {
        "deposit",
        "withdrawal",
        "transfer",
        "hold",
        "fee",
        "trade",
        "pnl",
        "margin",
        "bet",
        "payout",
        "stake",
        "refund",
        "faucet",
    }
)


class Account(msgspec.Struct, array_like=True, gc=False):
    id: int
    owner: str
    asset: str
    flags: int
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def balance(self) -> int:
        """Posted balance: what the account owns, holds included."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What the account may still spend: the posted balance less its holds."""
        return self.credits_posted - self.debits_posted - self.debits_pending


class Transfer(msgspec.Struct, tag="transfer", array_like=True, gc=False):
    """A transfer as executed; it is also the event the ledger emits for it."""

    seq: int
    id: int
    kind: int
    debit_account_id: int
    credit_account_id: int
    asset: str
    amount: int
    code: str
    pending_id: int = 0


class Hold(msgspec.Struct, array_like=True, gc=False):
    """A pending transfer and how it resolved. `amount` is what is still pending; partial posts
    and releases lower it (and `posted_amount` counts what was posted)."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: str
    status: int = HOLD_PENDING
    posted_amount: int = 0


class Leg(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One transfer to execute. For POST/VOID only pending_id (and amount for a partial post) count."""

    kind: int  # SINGLE, PENDING, POST or VOID
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    code: str = "transfer"
    pending_id: int = 0


class LedgerFailure(msgspec.Struct, frozen=True):
    index: int
    code: str


class LedgerState(msgspec.Struct, array_like=True):
    """The ledger's whole state, in canonical order, for snapshots and hashing."""

    accounts: list[Account]
    holds: list[Hold]
    next_account_id: int
    next_transfer_id: int


# Undo journal entry kinds.
_U_OPEN: Final = 0
_U_SINGLE: Final = 1
_U_PENDING: Final = 2
_U_RESOLVE: Final = 3
_U_PART: Final = 4
_U_MORE: Final = 5


class Ledger:
    """Accounts, holds and the undo journal. Single-threaded; driven by the engine."""

    __slots__ = (
        "_journal",
        "accounts",
        "assets",
        "by_key",
        "events",
        "holds",
        "next_account_id",
        "next_transfer_id",
    )

    def __init__(self, assets: frozenset[str]) -> None:
        self.assets = assets
        self.accounts: dict[int, Account] = {}
        self.by_key: dict[tuple[str, str], Account] = {}
        self.holds: dict[int, Hold] = {}
        self.next_account_id = 1
        self.next_transfer_id = 1
        self._journal: list[tuple[int, object, object, int, int]] = []
        # The engine points this at the current command's event list.
        self.events: list[object] = []

    # ---- accounts -------------------------------------------------------------------------

    def account(self, owner: str, asset: str) -> Account | None:
        return self.by_key.get((owner, asset))

    def open_account(self, owner: str, asset: str, flags: int | None = None) -> Account | str:
        """Return the (owner, asset) account, opening it if needed; a code on bad input."""
        found = self.by_key.get((owner, asset))
        if found is not None:
            return found
        if asset not in self.assets:
            return codes.UNKNOWN_ASSET
        if not owner or len(owner) > OWNER_LENGTH_MAX:
            return codes.BAD_OWNER
        if len(self.accounts) >= ACCOUNTS_MAX:
            return codes.ACCOUNTS_MAX_REACHED
        if flags is None:
            flags = default_flags(owner)
        acc = Account(self.next_account_id, owner, asset, flags)
        self.next_account_id += 1
        self.accounts[acc.id] = acc
        self.by_key[(owner, asset)] = acc
        self._journal.append((_U_OPEN, acc, None, 0, 0))
        return acc

    # ---- transfers ------------------------------------------------------------------------

    def execute(self, legs: Sequence[Leg], seq: int) -> list[Transfer] | LedgerFailure:
        """Execute legs as one linked batch: all succeed, or none is applied and the first failure
        is returned with its index (the others count as linked_event_failed)."""
        if not 0 < len(legs) <= TRANSFERS_PER_BATCH_MAX:
            return LedgerFailure(0, codes.TOO_MANY_TRANSFERS)
        mark = len(self._journal)
        events_mark = len(self.events)
        done: list[Transfer] = []
        for index, leg in enumerate(legs):
            kind = leg.kind
            out: Transfer | str
            if kind in (SINGLE, PENDING):
                dr = self.accounts.get(leg.debit_account_id)
                cr = self.accounts.get(leg.credit_account_id)
                if dr is None:
                    out = codes.DEBIT_ACCOUNT_NOT_FOUND
                elif cr is None:
                    out = codes.CREDIT_ACCOUNT_NOT_FOUND
                else:
                    out = self.move(dr, cr, leg.amount, leg.code, seq, pending=kind == PENDING)
            elif kind in (POST, VOID):
                out = self.resolve(leg.pending_id, leg.amount, seq, post=kind == POST)
            else:
                raise AssertionError(f"unknown transfer kind {kind}")
            if isinstance(out, str):
                self._undo_to(mark)
                del self.events[events_mark:]
                return LedgerFailure(index, out)
            done.append(out)
        return done

    def move(
        self, dr: Account, cr: Account, amount: int, code: str, seq: int, pending: bool = False
    ) -> Transfer | str:
        """Move `amount` from dr to cr, posted at once or held (pending); a code if it may not."""
        if amount <= 0:
            return codes.AMOUNT_MUST_BE_POSITIVE
        if code not in TRANSFER_CODES:
            return codes.UNKNOWN_TRANSFER_CODE
        if dr is cr:
            return codes.ACCOUNTS_MUST_BE_DIFFERENT
        if dr.asset != cr.asset:
            return codes.ASSETS_MUST_MATCH
        refused = _limits(dr, cr, amount)
        if refused is not None:
            return refused
        transfer_id = self.next_transfer_id
        self.next_transfer_id = transfer_id + 1
        if pending:
            dr.debits_pending += amount
            cr.credits_pending += amount
            self.holds[transfer_id] = Hold(transfer_id, dr.id, cr.id, amount, code)
            self._journal.append((_U_PENDING, dr, cr, amount, transfer_id))
            transfer = Transfer(seq, transfer_id, PENDING, dr.id, cr.id, dr.asset, amount, code)
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
            self._journal.append((_U_SINGLE, dr, cr, amount, transfer_id))
            transfer = Transfer(seq, transfer_id, SINGLE, dr.id, cr.id, dr.asset, amount, code)
        self.events.append(transfer)
        return transfer

    def resolve(self, pending_id: int, amount: int, seq: int, *, post: bool) -> Transfer | str:
        """Post (all when amount is 0, else part) or void a hold; a hold resolves at most once."""
        hold = self.holds.get(pending_id)
        if hold is None:
            return codes.PENDING_TRANSFER_NOT_FOUND
        if hold.status == HOLD_POSTED:
            return codes.ALREADY_POSTED
        if hold.status == HOLD_VOIDED:
            return codes.ALREADY_VOIDED
        if post:
            # Amount 0 on a post means "the whole hold", as in TigerBeetle.
            if amount == 0:
                amount = hold.amount
            elif amount < 0:
                return codes.AMOUNT_MUST_BE_POSITIVE
            elif amount > hold.amount:
                return codes.EXCEEDS_PENDING_AMOUNT
        else:
            amount = 0
        dr = self.accounts[hold.debit_account_id]
        cr = self.accounts[hold.credit_account_id]
        dr.debits_pending -= hold.amount
        cr.credits_pending -= hold.amount
        dr.debits_posted += amount
        cr.credits_posted += amount
        assert dr.debits_pending >= 0 and cr.credits_pending >= 0
        hold.status = HOLD_POSTED if post else HOLD_VOIDED
        hold.posted_amount += amount
        transfer_id = self.next_transfer_id
        self.next_transfer_id = transfer_id + 1
        self._journal.append((_U_RESOLVE, hold, None, amount, transfer_id))
        kind = POST if post else VOID
        transfer = Transfer(seq, transfer_id, kind, dr.id, cr.id, dr.asset, amount, hold.code, hold.id)
        self.events.append(transfer)
        return transfer

    def resolve_part(
        self, hold_id: int, amount: int, seq: int, *, post: bool, forget: bool = False
    ) -> Transfer | str:
        """Post (or release) `amount` of a pending hold and keep the rest pending; the hold is
        resolved (posted if anything was ever posted, else voided) once nothing is left.

        `forget` drops a resolved hold from memory: a product that tracks its own holds (spot
        orders) never asks about them again, and would otherwise grow the ledger by one hold per
        order forever.
        """
        hold = self.holds.get(hold_id)
        if hold is None:
            return codes.PENDING_TRANSFER_NOT_FOUND
        if hold.status != HOLD_PENDING:
            return codes.ALREADY_POSTED if hold.status == HOLD_POSTED else codes.ALREADY_VOIDED
        if amount <= 0:
            return codes.AMOUNT_MUST_BE_POSITIVE
        if amount > hold.amount:
            return codes.EXCEEDS_PENDING_AMOUNT
        dr = self.accounts[hold.debit_account_id]
        cr = self.accounts[hold.credit_account_id]
        dr.debits_pending -= amount
        cr.credits_pending -= amount
        hold.amount -= amount
        if post:
            dr.debits_posted += amount
            cr.credits_posted += amount
            hold.posted_amount += amount
        done = hold.amount == 0
        if done:
            hold.status = HOLD_POSTED if hold.posted_amount else HOLD_VOIDED
            if forget:
                del self.holds[hold_id]
        transfer_id = self.next_transfer_id
        self.next_transfer_id = transfer_id + 1
        self._journal.append((_U_PART, hold, (post, done and forget), amount, transfer_id))
        transfer = Transfer(
            seq,
            transfer_id,
            POST_PART if post else VOID_PART,
            dr.id,
            cr.id,
            dr.asset,
            amount,
            hold.code,
            hold_id,
        )
        self.events.append(transfer)
        return transfer

    def hold_more(self, hold_id: int, amount: int, seq: int) -> Transfer | str:
        """Add `amount` to a pending hold, under the same checks as a new hold."""
        hold = self.holds.get(hold_id)
        if hold is None:
            return codes.PENDING_TRANSFER_NOT_FOUND
        if hold.status != HOLD_PENDING:
            return codes.ALREADY_POSTED if hold.status == HOLD_POSTED else codes.ALREADY_VOIDED
        if amount <= 0:
            return codes.AMOUNT_MUST_BE_POSITIVE
        dr = self.accounts[hold.debit_account_id]
        cr = self.accounts[hold.credit_account_id]
        refused = _limits(dr, cr, amount)
        if refused is not None:
            return refused
        dr.debits_pending += amount
        cr.credits_pending += amount
        hold.amount += amount
        transfer_id = self.next_transfer_id
        self.next_transfer_id = transfer_id + 1
        self._journal.append((_U_MORE, hold, None, amount, transfer_id))
        transfer = Transfer(seq, transfer_id, HOLD_MORE, dr.id, cr.id, dr.asset, amount, hold.code, hold_id)
        self.events.append(transfer)
        return transfer

    # ---- the undo journal ---------------------------------------------------------------------

    def begin(self, events: list[object]) -> None:
        """Start a command: a fresh journal, and events go to the given list."""
        self._journal.clear()
        self.events = events

    def rollback(self) -> None:
        """Undo every mutation since begin()."""
        self._undo_to(0)

    def _undo_to(self, mark: int) -> None:
        journal = self._journal
        while len(journal) > mark:
            kind, a, b, amount, transfer_id = journal.pop()
            if kind == _U_SINGLE:
                assert isinstance(a, Account) and isinstance(b, Account)
                a.debits_posted -= amount
                b.credits_posted -= amount
                self.next_transfer_id = transfer_id
            elif kind == _U_PENDING:
                assert isinstance(a, Account) and isinstance(b, Account)
                a.debits_pending -= amount
                b.credits_pending -= amount
                del self.holds[transfer_id]
                self.next_transfer_id = transfer_id
            elif kind == _U_RESOLVE:
                assert isinstance(a, Hold)
                dr = self.accounts[a.debit_account_id]
                cr = self.accounts[a.credit_account_id]
                dr.debits_posted -= amount
                cr.credits_posted -= amount
                dr.debits_pending += a.amount
                cr.credits_pending += a.amount
                a.status = HOLD_PENDING
                a.posted_amount -= amount
                self.next_transfer_id = transfer_id
            elif kind == _U_MORE:
                assert isinstance(a, Hold)
                self.accounts[a.debit_account_id].debits_pending -= amount
                self.accounts[a.credit_account_id].credits_pending -= amount
                a.amount -= amount
                self.next_transfer_id = transfer_id
            elif kind == _U_PART:
                assert isinstance(a, Hold) and isinstance(b, tuple)
                post, forgotten = b
                dr = self.accounts[a.debit_account_id]
                cr = self.accounts[a.credit_account_id]
                dr.debits_pending += amount
                cr.credits_pending += amount
                a.amount += amount
                if post:
                    dr.debits_posted -= amount
                    cr.credits_posted -= amount
                    a.posted_amount -= amount
                a.status = HOLD_PENDING
                if forgotten:
                    self.holds[a.id] = a
                self.next_transfer_id = transfer_id
            else:
                assert kind == _U_OPEN and isinstance(a, Account)
                del self.accounts[a.id]
                del self.by_key[(a.owner, a.asset)]
                self.next_account_id = a.id

    # ---- state ----------------------------------------------------------------------------------

    def state(self) -> LedgerState:
        return LedgerState(
            accounts=[self.accounts[k] for k in sorted(self.accounts)],
            holds=[self.holds[k] for k in sorted(self.holds)],
            next_account_id=self.next_account_id,
            next_transfer_id=self.next_transfer_id,
        )

    def restore(self, state: LedgerState) -> None:
        self.accounts = {a.id: a for a in state.accounts}
        self.by_key = {(a.owner, a.asset): a for a in state.accounts}
        self.holds = {h.id: h for h in state.holds}
        self.next_account_id = state.next_account_id
        self.next_transfer_id = state.next_transfer_id
        self._journal.clear()

    def check_invariants(self) -> None:
        """Assert the ledger's invariants over every account (tests and `replay --verify`)."""
        posted: dict[str, int] = {}
        pending: dict[str, int] = {}
        for acc in self.accounts.values():
            posted[acc.asset] = posted.get(acc.asset, 0) + acc.credits_posted - acc.debits_posted
            pending[acc.asset] = pending.get(acc.asset, 0) + acc.credits_pending - acc.debits_pending
            assert min(acc.debits_posted, acc.credits_posted, acc.debits_pending, acc.credits_pending) >= 0
            if acc.flags & NO_OVERDRAFT:
                assert acc.debits_posted + acc.debits_pending <= acc.credits_posted, acc
        assert all(v == 0 for v in posted.values()), posted
        assert all(v == 0 for v in pending.values()), pending
        held: dict[int, int] = {}
        for hold in self.holds.values():
            if hold.status == HOLD_PENDING:
                held[hold.debit_account_id] = held.get(hold.debit_account_id, 0) + hold.amount
        for acc in self.accounts.values():
            assert held.get(acc.id, 0) == acc.debits_pending, acc


def _limits(dr: Account, cr: Account, amount: int) -> str | None:
    """Why `amount` more may not leave `dr` for `cr` (overdraft, credit excess, overflow), or None."""
    if dr.flags & NO_OVERDRAFT and dr.debits_posted + dr.debits_pending + amount > dr.credits_posted:
        return codes.INSUFFICIENT_FUNDS
    if cr.flags & NO_CREDIT_EXCESS and cr.credits_posted + cr.credits_pending + amount > cr.debits_posted:
        return codes.EXCEEDS_DEBITS
    # posted + pending bounds what either total can reach once a hold is posted.
    if (
        dr.debits_posted + dr.debits_pending + amount > TOTAL_MAX
        or cr.credits_posted + cr.credits_pending + amount > TOTAL_MAX
    ):
        return codes.OVERFLOW
    return None


def default_flags(owner: str) -> int:
    """Users and escrows may never go negative; world and house may."""
    if owner in (WORLD, HOUSE):
        return 0
    return NO_OVERDRAFT

"""The ledger commands as the engine's first product: accounts, deposits, withdrawals, transfers
and holds (two-phase: place, then post fully/partly or void).

The ledger state itself lives in the engine (every product uses it); this product's own state
is the set of pending withdrawals (hold id -> owner), so that only a withdrawal's hold can be
completed or rejected as one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from cashmarkets.core import codes
from cashmarkets.core.commands import (
    DESTINATION_LENGTH_MAX,
    LEDGER_COMMANDS,
    Command,
    CompleteWithdrawal,
    Deposit,
    LinkedTransfers,
    OpenAccount,
    PlaceHold,
    PostHold,
    RejectWithdrawal,
    RequestWithdrawal,
    TransferFunds,
    VoidHold,
    Withdraw,
)
from cashmarkets.core.events import AccountCreated, WithdrawalRequested, WithdrawalResolved
from cashmarkets.core.ledger import (
    PENDING,
    POST,
    SINGLE,
    TRANSFERS_PER_BATCH_MAX,
    VOID,
    WORLD,
    Account,
    LedgerFailure,
    Leg,
)
from cashmarkets.core.results import (
    AccountOpened,
    BalanceAfter,
    Reject,
    ResultData,
    TransfersDone,
    WithdrawalState,
)

_STATE_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(list[tuple[int, str]])

if TYPE_CHECKING:
    from cashmarkets.core.engine import Engine, Handler
    from cashmarkets.core.reconcile import Check


class LedgerProduct:
    name = "ledger"
    commands = LEDGER_COMMANDS
    events: tuple[type, ...] = ()
    results: tuple[type[ResultData], ...] = (AccountOpened, TransfersDone, WithdrawalState)
    # The ledger's own settings (assets, dedup bounds) are EngineConfig's, not product rules.
    config_type = None
    rules_version = 0
    config = None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.withdrawals: dict[int, str] = {}  # pending withdrawal hold id -> owner

    def configure(self, config: Any) -> None:
        raise TypeError("the ledger has no rules of its own")

    def handlers(self) -> dict[type[Command], Handler]:
        return {
            OpenAccount: self.open_account,
            Deposit: self.deposit,
            Withdraw: self.withdraw,
            TransferFunds: self.transfer,
            PlaceHold: self.hold,
            PostHold: self.post_hold,
            VoidHold: self.void_hold,
            LinkedTransfers: self.linked,
            RequestWithdrawal: self.request_withdrawal,
            CompleteWithdrawal: self.complete_withdrawal,
            RejectWithdrawal: self.reject_withdrawal,
        }

    def snapshot_state(self) -> bytes:
        return _STATE_ENCODER.encode(sorted(self.withdrawals.items()))

    def restore_state(self, data: bytes) -> None:
        self.withdrawals = dict(_STATE_DECODER.decode(data))

    def reconcile(self) -> list[Check]:
        """Nothing beyond the per-asset balance every reconciliation checks (core/reconcile.py)."""
        return []

    # ---- handlers -------------------------------------------------------------------------------

    def open_account(self, cmd: OpenAccount) -> AccountOpened | Reject:
        existed = self.ledger.account(cmd.owner, cmd.asset) is not None
        if not existed and cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "system accounts open themselves")
        acc = self.ledger.open_account(cmd.owner, cmd.asset)
        if isinstance(acc, str):
            return Reject(acc)
        self._created(acc, existed)
        return AccountOpened(account_id=acc.id, owner=acc.owner, asset=acc.asset, created=not existed)

    def deposit(self, cmd: Deposit) -> TransfersDone | Reject:
        if cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "deposits are for user accounts")
        done = self._move(WORLD, cmd.owner, cmd.asset, cmd.amount, cmd.code, False, cmd.seq)
        if isinstance(done, Reject):
            return done
        return TransfersDone(transfer_ids=done.transfer_ids, balance=self._balance(cmd.owner, cmd.asset))

    def withdraw(self, cmd: Withdraw) -> TransfersDone | Reject:
        if cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "withdrawals are for user accounts")
        return self._move(cmd.owner, WORLD, cmd.asset, cmd.amount, "withdrawal", False, cmd.seq)

    def transfer(self, cmd: TransferFunds) -> TransfersDone | Reject:
        if cmd.from_owner.startswith("@") or cmd.to_owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "transfers move money between users; products move the rest")
        return self._move(cmd.from_owner, cmd.to_owner, cmd.asset, cmd.amount, cmd.code, False, cmd.seq)

    def hold(self, cmd: PlaceHold) -> TransfersDone | Reject:
        if cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "holds are placed on user accounts")
        return self._move(cmd.owner, cmd.to_owner, cmd.asset, cmd.amount, cmd.code, True, cmd.seq)

    def post_hold(self, cmd: PostHold) -> TransfersDone | Reject:
        if cmd.hold_id in self.withdrawals:
            return Reject(codes.BAD_COMMAND, "a withdrawal resolves by complete_withdrawal")
        out = self.ledger.resolve(cmd.hold_id, cmd.amount, cmd.seq, post=True)
        if isinstance(out, str):
            return Reject(out)
        return TransfersDone(transfer_ids=(out.id,))

    def void_hold(self, cmd: VoidHold) -> TransfersDone | Reject:
        if cmd.hold_id in self.withdrawals:
            return Reject(codes.BAD_COMMAND, "a withdrawal resolves by reject_withdrawal")
        out = self.ledger.resolve(cmd.hold_id, 0, cmd.seq, post=False)
        if isinstance(out, str):
            return Reject(out)
        return TransfersDone(transfer_ids=(out.id,))

    def linked(self, cmd: LinkedTransfers) -> TransfersDone | Reject:
        if not 0 < len(cmd.legs) <= TRANSFERS_PER_BATCH_MAX:
            return Reject(codes.TOO_MANY_TRANSFERS, f"1..{TRANSFERS_PER_BATCH_MAX} legs")
        legs: list[Leg] = []
        for spec in cmd.legs:
            if spec.kind == POST or spec.kind == VOID:
                if spec.pending_id in self.withdrawals:
                    return Reject(codes.BAD_COMMAND, "a withdrawal resolves by its own commands")
                legs.append(Leg(spec.kind, amount=spec.amount, pending_id=spec.pending_id))
                continue
            if spec.kind != SINGLE and spec.kind != PENDING:
                return Reject(codes.BAD_COMMAND, f"unknown transfer kind {spec.kind}")
            if spec.from_owner.startswith("@"):
                # Money leaves system accounts only through product handlers, never by command.
                return Reject(codes.BAD_OWNER, "a leg may not debit a system account")
            pair = self._accounts(spec.from_owner, spec.to_owner, spec.asset, spec.amount)
            if isinstance(pair, Reject):
                return pair
            legs.append(Leg(spec.kind, pair[0].id, pair[1].id, spec.amount, spec.code))
        out = self.ledger.execute(legs, cmd.seq)
        if isinstance(out, LedgerFailure):
            return Reject(out.code, f"leg {out.index}")
        return TransfersDone(transfer_ids=tuple(t.id for t in out))

    def request_withdrawal(self, cmd: RequestWithdrawal) -> WithdrawalState | Reject:
        if cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER, "withdrawals are for user accounts")
        destination = cmd.destination
        if not 0 < len(destination) <= DESTINATION_LENGTH_MAX or not destination.isprintable():
            return Reject(codes.BAD_DESTINATION)
        done = self._move(cmd.owner, WORLD, cmd.asset, cmd.amount, "withdrawal", True, cmd.seq)
        if isinstance(done, Reject):
            return done
        hold_id = done.transfer_ids[0]
        self.withdrawals[hold_id] = cmd.owner
        self.engine.on_rollback(lambda: self.withdrawals.pop(hold_id, None))
        self.engine.emit(WithdrawalRequested(cmd.seq, hold_id, cmd.owner, cmd.asset, cmd.amount, destination))
        return WithdrawalState(hold_id=hold_id, status="pending", balance=self._balance(cmd.owner, cmd.asset))

    def complete_withdrawal(self, cmd: CompleteWithdrawal) -> WithdrawalState | Reject:
        return self._resolve_withdrawal(cmd.hold_id, cmd.seq, cmd.reference, post=True)

    def reject_withdrawal(self, cmd: RejectWithdrawal) -> WithdrawalState | Reject:
        return self._resolve_withdrawal(cmd.hold_id, cmd.seq, cmd.reason, post=False)

    def _resolve_withdrawal(
        self, hold_id: int, seq: int, reference: str, *, post: bool
    ) -> WithdrawalState | Reject:
        owner = self.withdrawals.get(hold_id)
        if owner is None:
            return Reject(codes.WITHDRAWAL_NOT_FOUND, str(hold_id))
        if len(reference) > DESTINATION_LENGTH_MAX:
            return Reject(codes.BAD_COMMAND, f"reference is at most {DESTINATION_LENGTH_MAX} characters")
        out = self.ledger.resolve(hold_id, 0, seq, post=post)
        # A withdrawal's hold is resolved only through these commands, so it must still be pending.
        assert not isinstance(out, str), out
        del self.withdrawals[hold_id]
        self.engine.on_rollback(lambda: self.withdrawals.__setitem__(hold_id, owner))
        status = "completed" if post else "rejected"
        self.engine.emit(WithdrawalResolved(seq, hold_id, status, reference))
        return WithdrawalState(hold_id=hold_id, status=status)

    # ---- helpers --------------------------------------------------------------------------------

    def _move(
        self, debit_owner: str, credit_owner: str, asset: str, amount: int, code: str, pending: bool, seq: int
    ) -> TransfersDone | Reject:
        by_key = self.ledger.by_key
        dr = by_key.get((debit_owner, asset))
        cr = by_key.get((credit_owner, asset))
        if dr is None or cr is None:  # the uncommon path: accounts to open, or bad input
            pair = self._accounts(debit_owner, credit_owner, asset, amount)
            if isinstance(pair, Reject):
                return pair
            dr, cr = pair
        out = self.ledger.move(dr, cr, amount, code, seq, pending)
        if out.__class__ is str:
            return Reject(out)
        return TransfersDone(transfer_ids=(out.id,))  # type: ignore[union-attr]

    def _accounts(
        self, debit_owner: str, credit_owner: str, asset: str, amount: int
    ) -> tuple[Account, Account] | Reject:
        """The two accounts of a transfer, opening the credit side and system accounts as needed
        (the engine rolls an opening back if the command is rejected later)."""
        if amount <= 0:
            return Reject(codes.AMOUNT_MUST_BE_POSITIVE)
        ledger = self.ledger
        by_key = ledger.by_key
        dr = by_key.get((debit_owner, asset))
        if dr is None:
            # A user's account that was never funded has nothing to debit.
            if not debit_owner.startswith("@"):
                if asset not in ledger.assets:
                    return Reject(codes.UNKNOWN_ASSET, asset)
                return Reject(codes.INSUFFICIENT_FUNDS, f"{asset} balance is 0")
            opened = self._open(debit_owner, asset)
            if isinstance(opened, str):
                return Reject(opened)
            dr = opened
        cr = by_key.get((credit_owner, asset))
        if cr is None:
            opened = self._open(credit_owner, asset)
            if isinstance(opened, str):
                return Reject(opened)
            cr = opened
        return dr, cr

    def _balance(self, owner: str, asset: str) -> BalanceAfter | None:
        acc = self.ledger.by_key.get((owner, asset))
        return None if acc is None else BalanceAfter(asset, acc.balance, acc.available)

    def _open(self, owner: str, asset: str) -> Account | str:
        acc = self.ledger.open_account(owner, asset)
        if not isinstance(acc, str):
            self._created(acc, False)
        return acc

    def _created(self, acc: Account, existed: bool) -> None:
        if not existed:
            self.engine.emit(AccountCreated(self.engine.seq, acc.id, acc.owner, acc.asset, acc.flags))

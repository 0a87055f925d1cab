"""The ledger commands as the engine's first product: accounts, deposits, withdrawals, transfers
and holds (two-phase: place, then post fully/partly or void).

The ledger state itself lives in the engine (every product uses it); this product only has
handlers, so its own snapshot state is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cashmarkets.core import codes
from cashmarkets.core.commands import (
    LEDGER_COMMANDS,
    Command,
    Deposit,
    LinkedTransfers,
    OpenAccount,
    PlaceHold,
    PostHold,
    TransferFunds,
    VoidHold,
    Withdraw,
)
from cashmarkets.core.events import AccountCreated
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
from cashmarkets.core.results import AccountOpened, Reject, ResultData, TransfersDone

if TYPE_CHECKING:
    from cashmarkets.core.engine import Engine, Handler


class LedgerProduct:
    name = "ledger"
    commands = LEDGER_COMMANDS
    events: tuple[type, ...] = ()
    results: tuple[type[ResultData], ...] = (AccountOpened, TransfersDone)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ledger = engine.ledger

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
        }

    def snapshot_state(self) -> bytes:
        return b""

    def restore_state(self, data: bytes) -> None:
        assert data == b""

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
        return self._move(WORLD, cmd.owner, cmd.asset, cmd.amount, cmd.code, False, cmd.seq)

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
        out = self.ledger.resolve(cmd.hold_id, cmd.amount, cmd.seq, post=True)
        if isinstance(out, str):
            return Reject(out)
        return TransfersDone(transfer_ids=(out.id,))

    def void_hold(self, cmd: VoidHold) -> TransfersDone | Reject:
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

    def _open(self, owner: str, asset: str) -> Account | str:
        acc = self.ledger.open_account(owner, asset)
        if not isinstance(acc, str):
            self._created(acc, False)
        return acc

    def _created(self, acc: Account, existed: bool) -> None:
        if not existed:
            self.engine.emit(AccountCreated(self.engine.seq, acc.id, acc.owner, acc.asset, acc.flags))

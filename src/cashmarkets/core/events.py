"""Events: what happened, emitted by the engine for the projector, the gateway and other readers.

Every event carries the `seq` of the command that caused it. The ledger's `Transfer` is itself an
event (one per executed transfer); products add their own event types.
"""

from __future__ import annotations

import msgspec

from cashmarkets.core.ledger import Transfer


class AccountCreated(msgspec.Struct, tag="account_created", array_like=True, gc=False):
    seq: int
    account_id: int
    owner: str
    asset: str
    flags: int


class WithdrawalRequested(msgspec.Struct, tag="withdrawal_requested", array_like=True, gc=False):
    seq: int
    hold_id: int
    owner: str
    asset: str
    amount: int
    destination: str


class WithdrawalResolved(msgspec.Struct, tag="withdrawal_resolved", array_like=True, gc=False):
    seq: int
    hold_id: int
    status: str  # completed | rejected
    reference: str


Event = Transfer | AccountCreated | WithdrawalRequested | WithdrawalResolved

LEDGER_EVENTS: tuple[type, ...] = (Transfer, AccountCreated, WithdrawalRequested, WithdrawalResolved)

"""Results: what the engine answers for each command.

    Result = Accepted(seq, command_id, data) | Rejected(seq, command_id, code, detail)

Handlers return `data` (a tagged Struct, or None) or a `Reject(code, detail)`; the engine adds the
seq and command id. Codes are listed in `codes`.
"""

from __future__ import annotations

import msgspec


class Reject(msgspec.Struct, frozen=True, gc=False):
    """A handler's answer for an expected failure; the engine turns it into `Rejected`."""

    code: str
    detail: str = ""


class ResultData(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Base of every accepted command's payload."""


# Not kw_only: the engine builds one per command, positionally (measurably faster).
class Accepted(msgspec.Struct, tag="accepted", gc=False):
    seq: int
    command_id: str
    data: ResultData | None = None


class Rejected(msgspec.Struct, tag="rejected", kw_only=True, gc=False):
    seq: int
    command_id: str
    code: str
    detail: str = ""


class AccountOpened(ResultData, tag="account_opened"):
    account_id: int
    owner: str
    asset: str
    created: bool


class BalanceAfter(msgspec.Struct, array_like=True, gc=False):
    """A user account right after the command: lets a client read its own write even where the
    balance endpoint serves a projection that may lag by a batch."""

    asset: str
    balance: int
    available: int


class TransfersDone(ResultData, tag="transfers_done"):
    """Transfer ids in leg order; for a hold the first id is the hold id to post or void later."""

    transfer_ids: tuple[int, ...]
    balance: BalanceAfter | None = None


class WithdrawalState(ResultData, tag="withdrawal"):
    hold_id: int
    status: str  # pending | completed | rejected
    balance: BalanceAfter | None = None

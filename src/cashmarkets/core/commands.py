"""Commands: every state change enters the engine as one of these, in log order.

    Command (base: command_id, seq, ts_ns)
      ├── engine: ClaimFence, SetRules
      ├── ledger: OpenAccount, Deposit, Withdraw, TransferFunds, PlaceHold, PostHold, VoidHold,
      │           LinkedTransfers, RequestWithdrawal, CompleteWithdrawal, RejectWithdrawal
      └── products add their own (each module lists them in its COMMANDS tuple)

`command_id` is the client's idempotency key: the engine answers a repeat with the first result
and changes nothing. `seq` and `ts_ns` are stamped by the runtime as the command leaves the log,
so they are the same live and in replay. Evolve a command only by adding fields with defaults;
never rename a tag (tags are stored in the log).
"""

from __future__ import annotations

import msgspec

# Room for an API scope ("<user id>:", 33 characters) before a 128-character Idempotency-Key.
COMMAND_ID_LENGTH_MAX = 200


class Command(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    command_id: str
    seq: int = 0
    ts_ns: int = 0


class OpenAccount(Command, tag="open_account"):
    owner: str
    asset: str


class Deposit(Command, tag="deposit"):
    """Money enters from the outside world."""

    owner: str
    asset: str
    amount: int
    code: str = "deposit"


class Withdraw(Command, tag="withdraw"):
    """Money leaves to the outside world at once (two-phase withdrawals use PlaceHold to @world)."""

    owner: str
    asset: str
    amount: int


class TransferFunds(Command, tag="transfer"):
    from_owner: str
    to_owner: str
    asset: str
    amount: int
    code: str = "transfer"


class PlaceHold(Command, tag="hold"):
    """Reserve funds: a pending transfer from `owner` to `to_owner`, resolved later by post or void."""

    owner: str
    asset: str
    amount: int
    to_owner: str = "@house"
    code: str = "hold"


class PostHold(Command, tag="post_hold"):
    """Post a hold; amount 0 posts all of it, a smaller amount posts part and releases the rest."""

    hold_id: int
    amount: int = 0


class VoidHold(Command, tag="void_hold"):
    hold_id: int


class LegSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One leg of a LinkedTransfers command, by owner names (accounts are opened as needed)."""

    kind: int  # ledger.TransferKind
    from_owner: str = ""
    to_owner: str = ""
    asset: str = ""
    amount: int = 0
    code: str = "transfer"
    pending_id: int = 0


class LinkedTransfers(Command, tag="linked_transfers"):
    """Transfers that succeed or fail together."""

    legs: list[LegSpec]


DESTINATION_LENGTH_MAX = 256


class RequestWithdrawal(Command, tag="request_withdrawal"):
    """Hold funds for a withdrawal to `destination`; an admin or a chain adapter resolves it."""

    owner: str
    asset: str
    amount: int
    destination: str


class CompleteWithdrawal(Command, tag="complete_withdrawal"):
    """The money left (e.g. a chain transaction confirmed): post the hold to @world."""

    hold_id: int
    reference: str = ""


class RejectWithdrawal(Command, tag="reject_withdrawal"):
    """The withdrawal will not happen: void the hold, the funds are available again."""

    hold_id: int
    reason: str = ""


LEDGER_COMMANDS: tuple[type[Command], ...] = (
    OpenAccount,
    Deposit,
    Withdraw,
    TransferFunds,
    PlaceHold,
    PostHold,
    VoidHold,
    LinkedTransfers,
    RequestWithdrawal,
    CompleteWithdrawal,
    RejectWithdrawal,
)


class ClaimFence(Command, tag="claim_fence"):
    """A singleton role's new lease holder announces its token (docs/decisions/018): from here on,
    the engine refuses the role's commands that carry a lower token (`stale_fence`)."""

    role: str
    token: int


class SetRules(Command, tag="set_rules"):
    """Pin a product's rules in the log (docs/decisions/023): `config` is the canonical MessagePack
    of the product's `config_type`, `version` the rules version of the code that wrote it. The
    first one for a product (its genesis) configures the product while its state is as built."""

    product: str
    version: int
    config: bytes


ENGINE_COMMANDS: tuple[type[Command], ...] = (ClaimFence, SetRules)

"""Request and response bodies. Requests refuse unknown fields; amounts are decimal strings;
JSON keys are camelCase, as the specs' clients expect."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# ASCII addresses only (RFC 5321 dot-atom local part, LDH domain labels): anything an SMTP
# server or a mail header could misread is refused at the edge.
Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
        r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
    ),
]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
AmountText = Annotated[str, Meta(min_length=1, max_length=64, description='decimal string, e.g. "12.50"')]
AssetCode = Annotated[str, Meta(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")]
Chain = Literal["ethereum", "solana", "aptos"]


class Request(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    pass


class Response(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    pass


class SignupRequest(Request):
    email: Email
    password: Password


class SigninRequest(Request):
    """With a password: signs in. Without: emails a magic sign-in link."""

    email: Email
    password: Password | None = None


class MagicLinkConfirm(Request):
    """The token of an emailed sign-in link, posted by its confirmation page."""

    token: Annotated[str, Meta(min_length=1, max_length=256)]


class RefreshRequest(Request):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class WalletSigninRequest(Request):
    message: Annotated[str, Meta(min_length=1, max_length=4096)]
    signature: Annotated[str, Meta(min_length=1, max_length=512)]
    public_key: Annotated[str, Meta(max_length=256)] | None = None  # Aptos only


class FaucetRequest(Request):
    asset: AssetCode
    amount: AmountText


class WithdrawalCreate(Request):
    asset: AssetCode
    amount: AmountText
    destination: Annotated[str, Meta(min_length=1, max_length=256)]


class AdminDeposit(Request):
    user_id: Annotated[str, Meta(min_length=1, max_length=64)]
    asset: AssetCode
    amount: AmountText


class AdminResolve(Request):
    reference: Annotated[str, Meta(max_length=256)] = ""


class RoleChange(Request):
    role: Literal["player", "operator", "admin", "auditor"]


class StatusChange(Request):
    status: Literal["active", "disabled"]


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details: every error response has this shape."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str
    requestId: str
    errors: list[FieldError] | None = None
    commandId: str | None = None


class UserView(Response):
    id: str
    email: str | None
    role: str
    created_at_ns: int
    status: str | None = None  # active | disabled


class TokenPair(Response):
    token: str
    refresh_token: str
    user: UserView


class SignupDone(Response):
    user: UserView
    token: str
    refresh_token: str


class MagicLinkSent(Response):
    sent: bool


class WalletNonce(Response):
    nonce: str
    domain: str
    uri: str
    chain: str
    address: str
    expires_at_ns: int


class BalanceItem(Response):
    asset: str
    decimals: int
    balance: str
    available: str
    held: str


class Balances(Response):
    balances: list[BalanceItem]


class LedgerEntry(Response):
    id: int
    seq: int
    ts_ns: int
    kind: Literal["transfer", "hold", "post", "void", "post_part", "void_part", "hold_more"]
    asset: str
    amount: str  # signed from the caller's point of view: negative leaves the account
    code: str
    hold_id: int | None = None


class LedgerPage(Response):
    items: list[LedgerEntry]
    next_cursor: str | None


class CommandOutcome(Response):
    command_id: str
    status: Literal["accepted", "rejected"]
    seq: int
    code: str | None = None
    detail: str | None = None


class BalanceAfter(Response):
    asset: str
    balance: str
    available: str


class FaucetDone(Response):
    command_id: str
    seq: int
    balance: BalanceAfter


class Withdrawal(Response):
    id: int
    asset: str
    amount: str
    destination: str
    status: str
    reference: str
    requested_ts_ns: int
    resolved_ts_ns: int | None = None
    owner: str | None = None


class WithdrawalPage(Response):
    items: list[Withdrawal]
    next_cursor: str | None

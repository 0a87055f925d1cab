"""Balances, ledger history, the development faucet, withdrawals, and command outcomes."""

from __future__ import annotations

import base64
import math
import time
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import (
    BalanceAfter,
    BalanceItem,
    Balances,
    CommandOutcome,
    FaucetDone,
    FaucetRequest,
    LedgerEntry,
    LedgerPage,
    Withdrawal,
    WithdrawalCreate,
    WithdrawalPage,
)
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import command_id, derive_command_id, parse_money, result_data, services
from cashmarkets.core.commands import Deposit, RequestWithdrawal
from cashmarkets.core.ledger import PENDING, POST, POST_PART, VOID, VOID_PART, Account
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.core.results import Accepted, Rejected, TransfersDone, WithdrawalState
from cashmarkets.store import queries
from cashmarkets.store.faucet_totals import NS_PER_DAY, utc_day

# Every id and time in the store is a signed 64-bit integer.
INT64_MAX = 2**63 - 1
ROUTE_LENGTH_MAX = 512

_KINDS = {
    0: "transfer",
    PENDING: "hold",
    POST: "post",
    VOID: "void",
    POST_PART: "post_part",
    VOID_PART: "void_part",
}


def encode_cursor(value: int | None) -> str | None:
    return None if value is None else base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "the cursor is not one this API issued") from None
    if not 0 < value <= INT64_MAX:
        raise ApiError(400, "bad_cursor", "the cursor is not one this API issued")
    return value


def balance_item(acc: Account) -> BalanceItem:
    decimals = ASSETS[acc.asset].decimals
    return BalanceItem(
        asset=acc.asset,
        decimals=decimals,
        balance=format_amount(acc.balance, decimals),
        available=format_amount(acc.available, decimals),
        held=format_amount(acc.debits_pending, decimals),
    )


def balance_after(result: Accepted, asset: str) -> BalanceAfter:
    """Read-your-writes: the balance the engine reported right after the caller's command."""
    decimals = ASSETS[asset].decimals
    data = result.data
    after = getattr(data, "balance", None)
    balance, available = (after.balance, after.available) if after is not None else (0, 0)
    return BalanceAfter(
        asset=asset, balance=format_amount(balance, decimals), available=format_amount(available, decimals)
    )


def withdrawal_view(row: Any, *, with_owner: bool = False) -> Withdrawal:
    decimals = ASSETS[row.asset].decimals
    return Withdrawal(
        id=row.hold_id,
        asset=row.asset,
        amount=format_amount(row.amount, decimals),
        destination=row.destination,
        status=row.status,
        reference=row.reference,
        requested_ts_ns=row.requested_ts_ns,
        resolved_ts_ns=row.resolved_ts_ns,
        owner=row.owner if with_owner else None,
    )


class AccountsController(Controller):
    path = "/api/v1"
    tags = ["accounts"]
    dependencies = {"user": current_user}

    @get("/balance")
    async def balance(self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]) -> Balances:
        """Every asset the caller holds: balance, available (balance less holds), held."""
        accounts = await services(request).balances.accounts_of(user.id)
        return Balances(balances=[balance_item(a) for a in accounts])

    @get("/ledger")
    async def ledger(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        asset: Annotated[str | None, QueryParameter(max_length=16)] = None,
        code: Annotated[str | None, QueryParameter(max_length=32)] = None,
        from_ns: Annotated[int | None, QueryParameter(name="fromNs", ge=0, le=INT64_MAX)] = None,
        to_ns: Annotated[int | None, QueryParameter(name="toNs", ge=0, le=INT64_MAX)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> LedgerPage:
        """The caller's ledger history, newest first; pass `nextCursor` back as `cursor`."""
        svc = services(request)
        rows, next_id = await queries.ledger_page(
            svc.db,
            user.id,
            asset=asset,
            code=code,
            from_ns=from_ns,
            to_ns=to_ns,
            before_id=decode_cursor(cursor),
            limit=limit,
        )
        items = []
        for row, mine in rows:
            decimals = ASSETS[row.asset].decimals
            signed = -row.amount if row.debit_account_id == mine else row.amount
            items.append(
                LedgerEntry(
                    id=row.transfer_id,
                    seq=row.seq,
                    ts_ns=row.ts_ns,
                    kind=_KINDS[row.kind],  # type: ignore[arg-type]
                    asset=row.asset,
                    amount=format_amount(signed, decimals),
                    code=row.code,
                    hold_id=row.pending_id or (row.transfer_id if row.kind == PENDING else None),
                )
            )
        return LedgerPage(items=items, next_cursor=encode_cursor(next_id))

    @post("/faucet", status_code=200)
    async def faucet(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[FaucetRequest]
    ) -> FaucetDone:
        """Development money (embedded/dev mode only)."""
        svc = services(request)
        if not svc.settings.faucet_enabled:
            raise ApiError(403, "faucet_disabled", "the faucet is off in this deployment")
        asset = svc.asset(data.asset)
        amount = parse_money(asset, data.amount)
        day_max = svc.faucet.daily_max.get(asset.code, 0)
        if amount > day_max:
            detail = f"at most {format_amount(day_max, asset.decimals)} {asset.code} per request and per day"
            raise ApiError(
                400,
                "invalid_amount",
                detail if day_max else f"the faucet gives no {asset.code}",
                errors=[{"field": "amount", "message": "too_large"}],
            )
        # Counted before the deposit (one conditional upsert: concurrent requests cannot together
        # pass the day's maximum), taken back if the engine refuses it.
        now_ns = time.time_ns()
        day = utc_day(now_ns)
        if not await svc.faucet.reserve(user.id, asset.code, day, amount, day_max):
            left = max(0, day_max - await svc.faucet.total(user.id, asset.code, day))
            raise ApiError(
                429,
                "faucet_limit",
                f"the faucet gives at most {format_amount(day_max, asset.decimals)} {asset.code} per user "
                f"per day (UTC); {format_amount(left, asset.decimals)} {asset.code} left today",
                headers={"Retry-After": str(max(1, math.ceil(((day + 1) * NS_PER_DAY - now_ns) / 1e9)))},
                extra={
                    "dailyMax": format_amount(day_max, asset.decimals),
                    "remaining": format_amount(left, asset.decimals),
                },
            )
        cmd = Deposit(
            command_id=command_id(request, user.id),
            owner=user.id,
            asset=asset.code,
            amount=amount,
            code="faucet",
        )
        try:
            result = await svc.execute(cmd)
            result_data(result, TransfersDone)
        except ApiError as exc:
            if exc.status != 504:  # refused: give the amount back (after a 504 it may still apply)
                await svc.faucet.refund(user.id, asset.code, day, amount)
            raise
        return FaucetDone(
            command_id=result.command_id,
            seq=result.seq,
            balance=balance_after(result, asset.code),
        )

    @post("/withdrawals", status_code=202)
    async def request_withdrawal(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        data: JSONBody[WithdrawalCreate],
    ) -> Withdrawal:
        """Hold the amount for a withdrawal; an admin or a chain adapter completes or rejects it."""
        svc = services(request)
        asset = svc.asset(data.asset)
        amount = parse_money(asset, data.amount)
        cmd = RequestWithdrawal(
            command_id=command_id(request, user.id),
            owner=user.id,
            asset=asset.code,
            amount=amount,
            destination=data.destination,
        )
        result = await svc.execute(cmd)
        state = result_data(result, WithdrawalState)
        return Withdrawal(
            id=state.hold_id,
            asset=asset.code,
            amount=format_amount(amount, asset.decimals),
            destination=data.destination,
            status=state.status,
            reference="",
            requested_ts_ns=cmd.ts_ns,
        )

    @get("/withdrawals")
    async def list_withdrawals(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> WithdrawalPage:
        rows, next_id = await queries.withdrawals_page(
            services(request).db, owner=user.id, status=None, before_id=decode_cursor(cursor), limit=limit
        )
        return WithdrawalPage(items=[withdrawal_view(r) for r in rows], next_cursor=encode_cursor(next_id))

    @get("/commands/{key:str}")
    async def command(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        key: FromPath[str],
        route: Annotated[str | None, QueryParameter(max_length=ROUTE_LENGTH_MAX)] = None,
    ) -> CommandOutcome:
        """The outcome of a command sent with `Idempotency-Key: key` (e.g. after a 504) to `route`:
        the path it was sent to (`/api/v1/faucet`, `/api/v1/spot/orders/7`), or the WebSocket
        command's name (`OPEN_POSITION`, `CLOSE_POSITION`)."""
        if not 0 < len(key) <= 128:
            raise ApiError(400, "bad_request", "key is 1..128 characters")
        if not route:
            raise ApiError(
                400,
                "route_required",
                "name the route the key was sent to: ?route=/api/v1/faucet (the path), "
                "or a WebSocket command's name (?route=OPEN_POSITION)",
                errors=[{"field": "route", "message": "required"}],
            )
        result = await services(request).bus.result_of(derive_command_id(user.id, key, route))
        if result is None:
            raise ApiError(
                404, "not_found", "no command with this key (or it is older than the dedup window)"
            )
        if isinstance(result, Rejected):
            return CommandOutcome(
                command_id=key, status="rejected", seq=result.seq, code=result.code, detail=result.detail
            )
        assert isinstance(result, Accepted)
        return CommandOutcome(command_id=key, status="accepted", seq=result.seq)

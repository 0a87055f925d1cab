"""Admin routes (role `admin`): deposits, withdrawal decisions, roles, account status. Every action
is audited."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from cashmarkets.api.accounts import INT64_MAX, decode_cursor, encode_cursor, withdrawal_view
from cashmarkets.api.auth import user_view
from cashmarkets.api.context import request_id_of
from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import (
    AdminDeposit,
    AdminResolve,
    CommandOutcome,
    RoleChange,
    StatusChange,
    UserView,
    Withdrawal,
    WithdrawalPage,
)
from cashmarkets.api.security import authenticate, require_roles
from cashmarkets.api.services import command_id, parse_money, services
from cashmarkets.api.spot import spot_markets
from cashmarkets.core.commands import CompleteWithdrawal, Deposit, RejectWithdrawal
from cashmarkets.core.products.spot import SetMarketStatus
from cashmarkets.store import queries


class SpotMarketStatusChange(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["TRADING", "HALTED"]


class SpotMarketStatusOut(msgspec.Struct):
    market: str
    status: str


def _actor(request: Request[Any, Any, Any]) -> str:
    user = authenticate(request)
    return f"user:{user.id}" if user else "unknown"


class AdminController(Controller):
    path = "/api/v1/admin"
    tags = ["admin"]
    guards = [require_roles("admin")]

    @post("/deposits", status_code=200)
    async def deposit(self, request: Request[Any, Any, Any], data: JSONBody[AdminDeposit]) -> CommandOutcome:
        """Credit a user from the outside world (e.g. a confirmed bank or chain deposit)."""
        svc = services(request)
        if await svc.users.by_id(data.user_id) is None:
            raise ApiError(404, "not_found", "no such user")
        asset = svc.asset(data.asset)
        amount = parse_money(asset, data.amount)
        cmd = Deposit(
            command_id=command_id(request, _actor(request)),
            owner=data.user_id,
            asset=asset.code,
            amount=amount,
        )
        result = await svc.execute(cmd)
        await svc.users.audit(
            actor=_actor(request),
            action="deposit",
            target=data.user_id,
            detail={"asset": asset.code, "amount": amount, "seq": result.seq},
            request_id=request_id_of(request),
        )
        return CommandOutcome(command_id=result.command_id, status="accepted", seq=result.seq)

    @post("/spot/markets/{market:str}/status", status_code=200)
    async def spot_market_status(
        self,
        request: Request[Any, Any, Any],
        market: Annotated[str, PathParameter(min_length=1, max_length=16)],
        data: JSONBody[SpotMarketStatusChange],
    ) -> SpotMarketStatusOut:
        """Halt a spot market (orders may still be canceled, not placed or amended) or resume it."""
        svc = services(request)
        if market not in await spot_markets(svc):
            raise ApiError(404, "unknown_market", f"unknown market {market!r}")
        result = await svc.execute(
            SetMarketStatus(
                command_id=command_id(request, _actor(request)), market=market, status=data.status
            )
        )
        await svc.users.audit(
            actor=_actor(request),
            action="spot_market_status",
            target=market,
            detail={"status": data.status, "seq": result.seq},
            request_id=request_id_of(request),
        )
        return SpotMarketStatusOut(market=market, status=data.status)

    @get("/withdrawals")
    async def withdrawals(
        self,
        request: Request[Any, Any, Any],
        status: Annotated[str | None, QueryParameter(max_length=16)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> WithdrawalPage:
        rows, next_id = await queries.withdrawals_page(
            services(request).db, owner=None, status=status, before_id=decode_cursor(cursor), limit=limit
        )
        return WithdrawalPage(
            items=[withdrawal_view(r, with_owner=True) for r in rows], next_cursor=encode_cursor(next_id)
        )

    @post("/withdrawals/{hold_id:int}/complete", status_code=200)
    async def complete(
        self,
        request: Request[Any, Any, Any],
        hold_id: Annotated[int, PathParameter(ge=1, le=INT64_MAX)],
        data: JSONBody[AdminResolve],
    ) -> Withdrawal:
        return await self._resolve(request, hold_id, data.reference, complete=True)

    @post("/withdrawals/{hold_id:int}/reject", status_code=200)
    async def reject(
        self,
        request: Request[Any, Any, Any],
        hold_id: Annotated[int, PathParameter(ge=1, le=INT64_MAX)],
        data: JSONBody[AdminResolve],
    ) -> Withdrawal:
        return await self._resolve(request, hold_id, data.reference, complete=False)

    async def _resolve(
        self, request: Request[Any, Any, Any], hold_id: int, reference: str, *, complete: bool
    ) -> Withdrawal:
        svc = services(request)
        cid = command_id(request, _actor(request))
        cmd = (
            CompleteWithdrawal(command_id=cid, hold_id=hold_id, reference=reference)
            if complete
            else RejectWithdrawal(command_id=cid, hold_id=hold_id, reason=reference)
        )
        result = await svc.execute(cmd)
        await svc.users.audit(
            actor=_actor(request),
            action="complete_withdrawal" if complete else "reject_withdrawal",
            target=str(hold_id),
            detail={"reference": reference, "seq": result.seq},
            request_id=request_id_of(request),
        )
        row = await queries.withdrawal(svc.db, hold_id)
        if row is None:  # not projected yet: answer from what we know
            return Withdrawal(
                id=hold_id,
                asset="",
                amount="",
                destination="",
                reference=reference,
                status="completed" if complete else "rejected",
                requested_ts_ns=0,
            )
        # The projection may lag the engine by a batch: report the outcome the engine just gave.
        status = "completed" if complete else "rejected"
        return msgspec.structs.replace(
            withdrawal_view(row, with_owner=True), status=status, reference=reference
        )

    @post("/users/{user_id:str}/role", status_code=200)
    async def set_role(
        self, request: Request[Any, Any, Any], user_id: FromPath[str], data: JSONBody[RoleChange]
    ) -> UserView:
        """Change a user's role; it holds at once for the tokens they already have."""
        svc = services(request)
        if not await svc.users.set_role(user_id, data.role):
            raise ApiError(404, "not_found", "no such user")
        await svc.users.audit(
            actor=_actor(request),
            action="set_role",
            target=user_id,
            detail={"role": data.role},
            request_id=request_id_of(request),
        )
        user = await svc.users.by_id(user_id)
        assert user is not None
        return user_view(user)

    @post("/users/{user_id:str}/status", status_code=200)
    async def set_status(
        self, request: Request[Any, Any, Any], user_id: FromPath[str], data: JSONBody[StatusChange]
    ) -> UserView:
        """Disable a user (every token they hold is refused at once, sign-in and refresh answer 403)
        or enable them again (they sign in again: the old tokens stay refused)."""
        svc = services(request)
        if not await svc.users.set_status(user_id, data.status):
            raise ApiError(404, "not_found", "no such user")
        await svc.users.audit(
            actor=_actor(request),
            action="set_status",
            target=user_id,
            detail={"status": data.status},
            request_id=request_id_of(request),
        )
        user = await svc.users.by_id(user_id)
        assert user is not None
        return user_view(user)

"""What the routes use, built once per process and kept on `app.state.services`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.api.errors import ApiError
from cashmarkets.api.security import TokenService
from cashmarkets.core import codes
from cashmarkets.core.commands import Command
from cashmarkets.core.money import ASSETS, AmountError, Asset, parse_amount
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.integrations.email import Mailer
from cashmarkets.ops.ids import new_id
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.bus import BadCommand, BalanceView, CommandBus, CommandTimeout
from cashmarkets.store.api_keys import ApiKeyStore
from cashmarkets.store.idempotency import KEY_LENGTH_MAX, IdempotencyStore
from cashmarkets.store.users import UserStore

_NOT_FOUND = {
    codes.PENDING_TRANSFER_NOT_FOUND,
    codes.WITHDRAWAL_NOT_FOUND,
    codes.ACCOUNT_NOT_FOUND,
    codes.POSITION_NOT_FOUND,
    codes.ORDER_NOT_FOUND,
    codes.UNKNOWN_GAME,
}

_CONFLICT = {
    codes.ALREADY_POSTED,
    codes.ALREADY_VOIDED,
    codes.DUPLICATE_CLIENT_ORDER_ID,
    codes.ROUND_NOT_OPEN,
}


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    tokens: TokenService
    users: UserStore
    api_keys: ApiKeyStore
    idempotency: IdempotencyStore
    bus: CommandBus
    balances: BalanceView
    mailer: Mailer
    engine_assets: frozenset[str]
    extras: dict[str, Any] = field(default_factory=dict)

    async def execute(self, cmd: Command) -> Accepted:
        """Submit a command and return its acceptance; a rejection becomes the matching 4xx."""
        try:
            result = await self.bus.submit(cmd, self.settings.command_timeout_s)
        except BadCommand as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        except CommandTimeout as exc:
            raise ApiError(
                504,
                "timeout",
                "the engine did not answer in time; the command may still be applied",
                extra={"commandId": exc.command_id},
            ) from None
        if isinstance(result, Rejected):
            raise rejection(result)
        return result

    def asset(self, code: str) -> Asset:
        found = ASSETS.get(code)
        if found is None or code not in self.engine_assets:
            raise ApiError(
                400,
                "unknown_asset",
                f"unknown asset {code!r}",
                errors=[{"field": "asset", "message": "unknown asset"}],
            )
        return found


def rejection(result: Rejected) -> ApiError:
    if result.code in _NOT_FOUND:
        status = 404
    elif result.code in _CONFLICT:
        status = 409
    elif result.code == codes.INTERNAL_ERROR:
        status = 500
    else:
        status = 422
    return ApiError(
        status,
        result.code,
        result.detail or codes.DESCRIPTIONS.get(result.code, ""),
        extra={"commandId": result.command_id},
    )


def services(request: Request[Any, Any, Any]) -> Services:
    found: Services = request.app.state.services
    return found


def command_id(request: Request[Any, Any, Any], scope: str) -> str:
    """The engine command id: the client's Idempotency-Key when given (so the engine itself
    deduplicates retries, even across API processes), else a fresh one. The two never meet:
    `<scope>:<key>` versus `<scope>/<server id>` (server ids are guessable, keys are the client's)."""
    return derive_command_id(scope, request.headers.get("idempotency-key"))


def derive_command_id(scope: str, key: str | None) -> str:
    """`<scope>:<key>` for a client's idempotency key (HTTP header or socket field), else
    `<scope>/<server id>`."""
    if key and 0 < len(key) <= KEY_LENGTH_MAX:
        return f"{scope}:{key}"
    return f"{scope}/{new_id()}"


def parse_money(asset: Asset, text: str, field_name: str = "amount") -> int:
    try:
        return parse_amount(text, asset.decimals, allow_zero=False)
    except AmountError as exc:
        raise ApiError(
            400,
            "invalid_amount",
            f"{field_name}: {exc.detail}",
            errors=[{"field": field_name, "message": exc.code}],
        ) from None

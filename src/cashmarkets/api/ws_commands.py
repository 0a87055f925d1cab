"""Commands over the WebSocket: the same validation and the same command path as the HTTP
routes, answered on the socket.

    COMMAND {"command": "<product>.<name>", ...}   a product's command, by its registered name
                                                  (ProductModule.socket_commands)
    GET_BALANCE {}                                the ledger's balances
    OPEN_POSITION / CLOSE_POSITION {...}           the older form, still accepted: leverage's, or
                                                  the chart game's when the payload names a `game`
                                                  (open) or a `positionId` (close)

An `idempotencyKey` in the payload plays the part of the HTTP `Idempotency-Key` header: the
engine command id is derived from it and the command's name (its route), so a repeat after a lost
answer is applied once, and the same key on HTTP or on another command names another command.

Every command is charged to the user's rate-limit bucket, the one their HTTP requests and API-key
requests take from (`api/ratelimit.py`); over it, the command is refused with RATE_LIMITED
(reason `rate_limited`, `retryAfterMs`) before any work, and the connection stays open. The
refusal is held back until a retry could succeed, but at least `RATE_LIMITED_HOLD_MIN_S` and at
most `RATE_LIMITED_HOLD_MAX_S`, in the command's slot: a client that answers each refusal with a
new command cannot make the gateway spin (its user has at most 32 commands in flight, so at most
~320 refusals/s per gateway process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from cashmarkets.api.errors import ApiError
from cashmarkets.api.ratelimit import RateLimiter, retry_after_ms, take, user_key
from cashmarkets.api.services import Services, derive_command_id
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.gateway.protocol import ErrorCode, MsgType, ProtocolError
from cashmarkets.ops import dependencies, metrics
from cashmarkets.products.module import ProductModule, SocketHandler
from cashmarkets.products.registry import products as registered
from cashmarkets.store.idempotency import KEY_LENGTH_MAX, valid_key

RATE_LIMITED_HOLD_MIN_S: Final = 0.1
RATE_LIMITED_HOLD_MAX_S: Final = 1.0
_ROUTES = {t.value: t.name for t in (MsgType.OPEN_POSITION, MsgType.CLOSE_POSITION, MsgType.GET_BALANCE)}


COMMAND_NAME_LENGTH_MAX: Final = 64


class SocketCommands:
    def __init__(
        self,
        services: Services,
        user_limiter: RateLimiter | None,
        modules: Iterable[ProductModule] | None = None,
    ) -> None:
        self.services = services
        self.user_limiter = user_limiter  # the HTTP API's per-user buckets; None: not limited
        self.named: dict[str, SocketHandler] = {}
        for module in registered() if modules is None else modules:
            for name, handler in module.socket_commands().items():
                assert name not in self.named, f"socket command {name} declared twice"
                self.named[name] = handler

    async def __call__(self, user_id: str, kind: int, payload: dict[str, Any]) -> tuple[MsgType, Any]:
        try:
            return await self._serve(user_id, kind, payload)
        except ProtocolError:
            raise
        except Exception as exc:
            # Redis, the store or the engine down: the same answer as HTTP's 503, not "internal".
            down = dependencies.unavailable(exc)
            if down is None:
                raise
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"{down} is unavailable; retry (with the same idempotencyKey)",
                reason=dependencies.CODE,
                retry_after_ms=dependencies.RETRY_AFTER_S * 1000,
            ) from None

    async def _serve(self, user_id: str, kind: int, payload: dict[str, Any]) -> tuple[MsgType, Any]:
        if self.user_limiter is not None:
            wait = await take(self.user_limiter, user_key(user_id))
            if wait > 0:
                metrics.RATE_LIMITED.labels("ws_user").inc()
                hold = min(max(wait, RATE_LIMITED_HOLD_MIN_S), RATE_LIMITED_HOLD_MAX_S)
                await asyncio.sleep(hold)
                after_ms = retry_after_ms(wait - hold) if wait > hold else 0
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"too many requests for this user (HTTP and socket together); retry in {after_ms} ms",
                    reason="rate_limited",
                    retry_after_ms=after_ms,
                )
        key = payload.pop("idempotencyKey", None)
        if key is not None and not valid_key(key):
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, f"idempotencyKey: 1..{KEY_LENGTH_MAX} printable characters"
            )
        name, route = _command_name(kind, payload)
        # The route of a socket command is its name: GET /api/v1/commands/{key}?route=OPEN_POSITION.
        cid = derive_command_id(user_id, key, route)
        try:
            if name is not None:
                handler = self.named.get(name)
                if handler is None:
                    raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown command {name!r}")
                return await handler(self.services, user_id, payload, cid)
            if kind == MsgType.GET_BALANCE:
                return MsgType.BALANCE_UPDATE, {"balances": await self._balances(user_id)}
        except ApiError as exc:
            code = ErrorCode.UNAVAILABLE if exc.status >= 500 else ErrorCode.REJECTED
            raise ProtocolError(code, exc.detail or exc.code, reason=exc.code) from None
        raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown command 0x{kind:02x}")

    async def _balances(self, user_id: str) -> list[dict[str, str]]:
        accounts = await self.services.balances.accounts_of(user_id)
        return [
            {
                "asset": acc.asset,
                "balance": format_amount(acc.balance, ASSETS[acc.asset].decimals),
                "available": format_amount(acc.available, ASSETS[acc.asset].decimals),
            }
            for acc in accounts
        ]


def _command_name(kind: int, payload: dict[str, Any]) -> tuple[str | None, str]:
    """(the registered command's name, or None for the ledger's GET_BALANCE; the route its
    command id is derived from). COMMAND names it; the older OPEN_POSITION / CLOSE_POSITION keep
    their routes (so a retried key finds its command) and are told apart by their payloads."""
    if kind == MsgType.COMMAND:
        name = payload.pop("command", None)
        if not isinstance(name, str) or not 0 < len(name) <= COMMAND_NAME_LENGTH_MAX:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, f"command: a name of 1..{COMMAND_NAME_LENGTH_MAX} characters"
            )
        return name, name
    route = _ROUTES.get(kind, f"0x{kind:02x}")
    if kind == MsgType.OPEN_POSITION:
        return ("chartgame.open" if "game" in payload else "leverage.open"), route
    if kind == MsgType.CLOSE_POSITION:
        return ("chartgame.close" if "positionId" in payload else "leverage.close"), route
    return None, route


def socket_payload(payload: dict[str, Any], kind: type[Any]) -> Any:
    """A socket command's payload as its request Struct (strict, as the HTTP body)."""
    try:
        return msgspec.convert(payload, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None

"""Commands over the WebSocket (OPEN_POSITION, CLOSE_POSITION, GET_BALANCE): the same validation
and the same command path as the HTTP routes, answered on the socket.

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
from typing import Any, Final

import msgspec

from cashmarkets.api.chartgame import PositionOpen, close_chart_position, open_chart_position
from cashmarkets.api.errors import ApiError
from cashmarkets.api.leverage import TradeClose, TradeCreate, close_trade, open_trade
from cashmarkets.api.ratelimit import RateLimiter, retry_after_ms, take, user_key
from cashmarkets.api.services import Services, derive_command_id
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.gateway.protocol import ErrorCode, MsgType, ProtocolError
from cashmarkets.ops import dependencies, metrics
from cashmarkets.store.idempotency import KEY_LENGTH_MAX, valid_key

RATE_LIMITED_HOLD_MIN_S: Final = 0.1
RATE_LIMITED_HOLD_MAX_S: Final = 1.0
_ROUTES = {t.value: t.name for t in (MsgType.OPEN_POSITION, MsgType.CLOSE_POSITION, MsgType.GET_BALANCE)}


class SocketCommands:
    def __init__(self, services: Services, user_limiter: RateLimiter | None) -> None:
        self.services = services
        self.user_limiter = user_limiter  # the HTTP API's per-user buckets; None: not limited

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
        # The route of a socket command is its name: GET /api/v1/commands/{key}?route=OPEN_POSITION.
        cid = derive_command_id(user_id, key, _ROUTES.get(kind, f"0x{kind:02x}"))
        try:
            # A `game` (open) or a `positionId` (close) means the chart game; else leverage.
            if kind == MsgType.OPEN_POSITION and "game" in payload:
                opened = await open_chart_position(
                    self.services, user_id, _convert(payload, PositionOpen), cid
                )
                return MsgType.POSITION_UPDATE, {"event": "chart", **msgspec.to_builtins(opened)}
            if kind == MsgType.CLOSE_POSITION and "positionId" in payload:
                position_id = _convert(payload, ChartPositionClose).position_id
                done = await close_chart_position(self.services, user_id, position_id, cid)
                return MsgType.POSITION_UPDATE, {"event": "chart", **msgspec.to_builtins(done)}
            if kind == MsgType.OPEN_POSITION:
                trade = await open_trade(self.services, user_id, _convert(payload, TradeCreate), cid)
                return MsgType.POSITION_UPDATE, {"event": "opened", **msgspec.to_builtins(trade)}
            if kind == MsgType.CLOSE_POSITION:
                closed = await close_trade(self.services, user_id, _convert(payload, TradeClose), cid)
                return MsgType.POSITION_UPDATE, {"event": "closed", **msgspec.to_builtins(closed)}
            if kind == MsgType.GET_BALANCE:
                accounts = await self.services.balances.accounts_of(user_id)
                balances = [
                    {
                        "asset": acc.asset,
                        "balance": format_amount(acc.balance, ASSETS[acc.asset].decimals),
                        "available": format_amount(acc.available, ASSETS[acc.asset].decimals),
                    }
                    for acc in accounts
                ]
                return MsgType.BALANCE_UPDATE, {"balances": balances}
        except ApiError as exc:
            code = ErrorCode.UNAVAILABLE if exc.status >= 500 else ErrorCode.REJECTED
            raise ProtocolError(code, exc.detail or exc.code, reason=exc.code) from None
        raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown command 0x{kind:02x}")


class ChartPositionClose(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    position_id: int


def _convert(payload: dict[str, Any], kind: type[Any]) -> Any:
    try:
        return msgspec.convert(payload, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None

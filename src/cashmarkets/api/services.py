"""What the routes use, built once per process and kept on `app.state.services`."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from litestar import Request
from litestar.utils import normalize_path
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.api.errors import ApiError
from cashmarkets.api.security import PasswordHashing, TokenService
from cashmarkets.core import codes
from cashmarkets.core.commands import Command
from cashmarkets.core.money import ASSETS, AmountError, Asset, parse_amount
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.integrations.email import Mailer
from cashmarkets.ops.ids import new_id
from cashmarkets.ops.settings import Settings
from cashmarkets.products.module import ProductModule
from cashmarkets.products.registry import products as registered
from cashmarkets.runtime.bus import BadCommand, BalanceView, CommandBus, CommandTimeout
from cashmarkets.store.api_keys import ApiKeyStore
from cashmarkets.store.faucet_totals import FaucetTotals
from cashmarkets.store.idempotency import KEY_LENGTH_MAX, IdempotencyStore
from cashmarkets.store.signin_throttle import SigninThrottle
from cashmarkets.store.users import UserStore

if TYPE_CHECKING:
    from cashmarkets.gateway.server import Gateway
    from cashmarkets.projection.projector import Projector
    from cashmarkets.runtime.runner import Runtime

T = TypeVar("T")

# The engine's and the ledger's rejections that are not 422; each product adds its own
# (ProductModule.http_statuses).
_STATUSES: dict[str, int] = {
    codes.PENDING_TRANSFER_NOT_FOUND: 404,
    codes.WITHDRAWAL_NOT_FOUND: 404,
    codes.ACCOUNT_NOT_FOUND: 404,
    codes.ALREADY_POSTED: 409,
    codes.ALREADY_VOIDED: 409,
    codes.INTERNAL_ERROR: 500,
}


@functools.cache
def _rejections(modules: tuple[ProductModule, ...]) -> tuple[dict[str, int], dict[str, str]]:
    """(code -> HTTP status, code -> description) over the engine, the ledger and `modules`."""
    statuses, descriptions = dict(_STATUSES), dict(codes.DESCRIPTIONS)
    for module in modules:
        statuses.update(module.http_statuses)
        descriptions.update(module.descriptions)
    return statuses, descriptions


# Compared and hashed by identity: one per process (routes keep per-process caches by it).
@dataclass(eq=False)
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
    passwords: PasswordHashing
    signin_throttle: SigninThrottle
    faucet: FaucetTotals
    # Embedded mode: the live runtime, the projector when it runs in this process, the gateway
    # and its port. None in distributed mode's API processes.
    runtime: Runtime | None = None
    projector: Projector | None = None
    gateway: Gateway | None = None
    ws_port: int | None = None
    # /ready's checks beyond the store's: name -> probe answering "ok" or why not.
    readiness: dict[str, Callable[[], Awaitable[str]]] = field(default_factory=dict)

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
    """The HTTP error of an engine rejection: its status as its product declares (else 422)."""
    statuses, descriptions = _rejections(registered())
    return ApiError(
        statuses.get(result.code, 422),
        result.code,
        result.detail or descriptions.get(result.code, ""),
        extra={"commandId": result.command_id},
    )


def services(request: Request[Any, Any, Any]) -> Services:
    found: Services = request.app.state.services
    return found


def command_id(request: Request[Any, Any, Any], scope: str) -> str:
    """The engine command id: from the client's Idempotency-Key and the request's path when a
    key is given (so the engine itself deduplicates retries, even across API processes), else a
    fresh one. The two never meet: `<scope>:<route>:<key>` versus `<scope>/<server id>` (server
    ids are guessable, keys are the client's)."""
    return derive_command_id(scope, request.headers.get("idempotency-key"), request.scope["path"])


def derive_command_id(scope: str, key: str | None, route: str) -> str:
    """`<scope>:<route tag>:<key>` for a client's idempotency key (HTTP header or socket field),
    else `<scope>/<server id>`. `route` is the HTTP path (as routed: `/api/v1/faucet`,
    `/api/v1/spot/orders/7`) or the socket command's name (`OPEN_POSITION`): the same key on two
    routes names two commands, and `GET /api/v1/commands/{key}?route=` finds each."""
    if key and 0 < len(key) <= KEY_LENGTH_MAX:
        return f"{scope}:{route_tag(route)}:{key}"
    return new_command_id(scope)


def new_command_id(scope: str) -> str:
    """A fresh, server-made command id (no client key): `<scope>/<server id>`."""
    return f"{scope}/{new_id()}"


def route_tag(route: str) -> str:
    """12 hex digits naming a route inside command ids (a path can be long; a command id is at
    most 200 characters). Paths are compared as Litestar routes them: `/api/v1/faucet/` and
    `/api/v1//faucet` are `/api/v1/faucet`."""
    if route.startswith("/"):
        route = normalize_path(route)
    return hashlib.sha256(route.encode()).hexdigest()[:12]


def result_data(result: Accepted, kind: type[T]) -> T:
    """The data of an accepted command, which must be of `kind`. Anything else means the engine
    answered a repeat of another command with the same id (a key used before for another request
    of the same route): 409, never a 500."""
    data = result.data
    if not isinstance(data, kind):
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this key was used for a different request",
            extra={"commandId": result.command_id},
        )
    return data


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

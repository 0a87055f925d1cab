"""The HTTP application: Litestar + msgspec, versioned under /api/v1, OpenAPI at /openapi.json,
interactive docs at /docs.

Embedded mode (`cashmarkets serve`): one process holds the runtime (log + engine), the projector
and the API; distributed mode: an API process talking to the engine process through Redis. The
lifespan starts the mode's parts (cashmarkets/bootstrap.py builds and starts them) and stops them
in reverse; this module only builds the Litestar app around them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import Litestar, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Redirect

from cashmarkets.api.accounts import AccountsController
from cashmarkets.api.admin import AdminController
from cashmarkets.api.apikeys import ApiKeysController
from cashmarkets.api.auth import AuthController
from cashmarkets.api.csrf import CsrfGuard
from cashmarkets.api.errors import EXCEPTION_HANDLERS, PROBLEM_JSON
from cashmarkets.api.health import health, metrics_endpoint, ready
from cashmarkets.api.info import info
from cashmarkets.api.middleware import edge_middleware
from cashmarkets.api.schemas import Problem
from cashmarkets.api.services import Services
from cashmarkets.bootstrap import jwt_secret, start_distributed_api, start_embedded
from cashmarkets.ops.nesting import RECURSION_LIMIT, pin_recursion_limit
from cashmarkets.ops.settings import Settings
from cashmarkets.products.registry import products as registered

log = structlog.get_logger("cashmarkets.api")

API_VERSION = "1"


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The OpenAPI 3.1 document."""
    return Response(request.app.openapi_schema.to_schema(), media_type="application/vnd.oai.openapi+json")


@get("/docs", include_in_schema=False, sync_to_thread=False)
def docs() -> Redirect:
    """Interactive API docs (Swagger UI)."""
    return Redirect("/schema/swagger")


def create_app(settings: Settings) -> Litestar:
    """Embedded (one process: runtime + projector + API) or, with PostgreSQL and Redis
    configured, a distributed API process that talks to the engine process through Redis."""
    _pin_recursion_limit()
    return build_litestar(settings, _lifespan(settings))


def _pin_recursion_limit() -> None:
    """Every import is done by now: make sure none left the recursion limit raised (deep client
    input must fail as a decode error, never overflow the C stack; ops/nesting.py)."""
    found = pin_recursion_limit()
    if found > RECURSION_LIMIT:
        log.warning("recursion limit was raised by an import; set back", found=found, now=RECURSION_LIMIT)


def _install(app: Litestar, settings: Settings, services: Services, limits: dict[str, Any]) -> None:
    app.state.services = services
    app.state.tokens = services.tokens
    app.state.request_body_max_bytes = settings.request_body_max_bytes
    app.state.rate_limits = limits
    app.state.csrf = CsrfGuard(settings.origins, jwt_secret(settings))


def _lifespan(settings: Settings) -> Any:
    """Start the mode's parts (cashmarkets/bootstrap.py) around the app, stop them after."""
    start = start_distributed_api if settings.distributed else start_embedded

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        started = await start(settings)
        try:
            _install(app, settings, started.services, started.limits)
            app.state.projection = started.projection
            runtime = started.services.runtime
            seq = None if runtime is None else runtime.engine.seq
            mode = "distributed" if settings.distributed else "embedded"
            log.info("serving", mode=mode, url=settings.base_url, seq=seq)
            yield
        finally:
            await started.stop()

    return lifespan


# Documented on every operation: all errors share the problem+json shape.
_ERROR_RESPONSES = {
    400: "Malformed request: bad JSON, unknown field, wrong type, bad amount",
    401: "Missing, expired or invalid credentials",
    403: "Not allowed: the caller's role, or a cookie session without an allowed Origin or X-CSRF-Token",
    404: "Unknown path, or not found / not yours",
    409: "Conflict: taken, already resolved, or idempotency key clash",
    413: "Request body larger than CASHMARKETS_REQUEST_BODY_MAX_BYTES",
    415: "A body that is not application/json",
    422: "Refused by the engine (e.g. insufficient_funds)",
    429: "Rate limited: see Retry-After",
    503: "dependency_unavailable: Redis, PostgreSQL or the engine is down; retry after Retry-After",
    504: "The engine did not answer in time; the command may still apply (see commandId)",
}


def document_errors(app: Litestar) -> None:
    """Declare the problem+json error responses (and their shape) on every route."""
    specs = {
        status: ResponseSpec(Problem, description=text, media_type=PROBLEM_JSON, generate_examples=False)
        for status, text in _ERROR_RESPONSES.items()
    }
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if getattr(handler, "include_in_schema", True) is False:
                continue
            handler.responses = {**specs, **(handler.responses or {})}


def build_litestar(settings: Settings, lifespan: Any) -> Litestar:
    app = Litestar(
        route_handlers=[
            AuthController,
            AccountsController,
            AdminController,
            *(route for module in registered() for route in module.routes()),
            ApiKeysController,
            info,
            health,
            ready,
            metrics_endpoint,
            openapi_json,
            docs,
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[edge_middleware],
        request_max_body_size=settings.request_body_max_bytes,
        openapi_config=OpenAPIConfig(
            title="Cash Markets",
            version=API_VERSION,
            description="Five real-time money products on one engine. Amounts are decimal strings.",
            # Not "/": Litestar would then answer every unknown path with its HTML schema 404.
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )
    document_errors(app)
    return app

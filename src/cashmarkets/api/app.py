"""The HTTP application: Litestar + msgspec, versioned under /api/v1, OpenAPI at /openapi.json,
interactive docs at /docs.

Embedded mode (`cashmarkets serve`): one process holds the runtime (log + engine), the projector
and the API. The lifespan builds everything in that order and tears it down in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from litestar import Litestar, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Redirect
from sqlalchemy import select

from cashmarkets.api.accounts import AccountsController
from cashmarkets.api.admin import AdminController
from cashmarkets.api.apikeys import ApiKeysController
from cashmarkets.api.auth import AuthController
from cashmarkets.api.binance import BinanceController
from cashmarkets.api.chartgame import ChartgameController
from cashmarkets.api.csrf import CsrfGuard
from cashmarkets.api.errors import EXCEPTION_HANDLERS, PROBLEM_JSON
from cashmarkets.api.health import health, metrics_endpoint, ready
from cashmarkets.api.info import info
from cashmarkets.api.leverage import LeverageController
from cashmarkets.api.middleware import edge_middleware
from cashmarkets.api.ratelimit import build_limiters
from cashmarkets.api.schemas import Problem
from cashmarkets.api.security import PasswordHashing, Sessions, TokenService
from cashmarkets.api.services import Services
from cashmarkets.api.spot import SpotController
from cashmarkets.api.ws_commands import SocketCommands
from cashmarkets.gateway.bridge import EngineBridge
from cashmarkets.gateway.server import Gateway, gateway_limits
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.integrations.email import mailer_from_url
from cashmarkets.ops import metrics
from cashmarkets.ops.local_secrets import local_secret
from cashmarkets.ops.nesting import RECURSION_LIMIT, pin_recursion_limit
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.bootstrap import build_engine, build_projector, build_runtime, store_url
from cashmarkets.runtime.bus import EmbeddedBus, EngineBalances
from cashmarkets.runtime.distributed import RedisBus, SqlBalances, engine_alive_key
from cashmarkets.runtime.marketmaker import MarketMaker
from cashmarkets.runtime.pricefeed import build_feed, runtime_sink, unwatch_feed, watch_feed
from cashmarkets.runtime.projection_health import ProjectionHealth, beat_reader, local_reader
from cashmarkets.runtime.singletons import run_chart_role
from cashmarkets.runtime.supervisor import Child
from cashmarkets.store import migrate
from cashmarkets.store.api_keys import ApiKeyStore
from cashmarkets.store.db import create_engine
from cashmarkets.store.faucet_totals import FaucetTotals, parse_daily_max
from cashmarkets.store.idempotency import IdempotencyStore
from cashmarkets.store.projector import NAME as PROJECTION
from cashmarkets.store.projector import Projector
from cashmarkets.store.signin_throttle import SigninThrottle
from cashmarkets.store.tables import projector_checkpoints
from cashmarkets.store.users import UserStore

log = structlog.get_logger("cashmarkets.api")

API_VERSION = "1"
LAG_POLL_S = 1.0
CLOCK_MARGIN_S = 60


def jwt_secret(settings: Settings) -> str:
    """The configured secret, or (embedded) one generated once and kept in the data directory."""
    return local_secret(
        settings,
        settings.jwt_secret,
        "jwt.secret",
        "CASHMARKETS_JWT_SECRET",
        lambda: secrets.token_urlsafe(48),
    )


def apikey_master_key(settings: Settings) -> bytes:
    """The key that seals API-key secrets (32 bytes), configured or (embedded) generated once."""
    text = local_secret(
        settings,
        settings.apikey_master_key,
        "apikey.key",
        "CASHMARKETS_APIKEY_MASTER_KEY",
        lambda: secrets.token_hex(32),
    )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SystemExit("CASHMARKETS_APIKEY_MASTER_KEY must be 64 hex digits (32 bytes)")
    return key


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
    return build_litestar(
        settings, _distributed_lifespan(settings) if settings.distributed else _embedded_lifespan(settings)
    )


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


def build_services(settings: Settings, db: Any, bus: Any, balances: Any, extras: dict[str, Any]) -> Services:
    return Services(
        settings=settings,
        db=db,
        tokens=TokenService(jwt_secret(settings), settings.access_token_ttl_s),
        # A revoked sign-in matters while its access tokens may live (plus a margin for clocks).
        users=UserStore(db, session_window_s=settings.access_token_ttl_s + CLOCK_MARGIN_S),
        api_keys=ApiKeyStore(db, apikey_master_key(settings)),
        idempotency=IdempotencyStore(db, lease_s=settings.idempotency_lease_s),
        bus=bus,
        balances=balances,
        mailer=mailer_from_url(settings.smtp_url, settings.mail_from),
        engine_assets=frozenset(build_engine().config.assets),
        passwords=PasswordHashing(settings.password_hashes_concurrent, settings.password_hashes_waiting_max),
        signin_throttle=SigninThrottle(
            db,
            failures_free=settings.signin_failures_free,
            lockout_max_s=settings.signin_lockout_max_s,
        ),
        faucet=FaucetTotals(db, faucet_daily_max(settings)),
        extras=extras,
    )


def faucet_daily_max(settings: Settings) -> dict[str, int]:
    try:
        return parse_daily_max(settings.faucet_daily_max)
    except ValueError as exc:
        raise SystemExit(f"CASHMARKETS_FAUCET_DAILY_MAX: {exc}") from None


def _engine_seq(runtime: Any) -> Any:
    async def seq() -> int:
        return int(runtime.engine.seq)

    return seq


def _projector_env(settings: Settings) -> dict[str, str]:
    """The projector child's settings: this process's environment, with what the child must agree
    on written out (settings may have come from arguments, not the environment)."""
    # Not the metrics port either: this process serves it (the child's lag is reported here).
    dropped = ("CASHMARKETS_DATABASE_URL", "CASHMARKETS_REDIS_URL", "CASHMARKETS_METRICS_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        CASHMARKETS_DATA_DIR=str(settings.data_dir.resolve()),
        CASHMARKETS_LOG_LEVEL=settings.log_level,
        CASHMARKETS_JOURNAL_SYNCHRONOUS=settings.journal_synchronous,
        CASHMARKETS_PROJECTOR_BATCH_RECORDS=str(settings.projector_batch_records),
    )
    return env


def _checkpoint_reader(db: Any) -> Callable[[], Awaitable[int]]:
    """The projector's committed seq, from its checkpoint row (0 before its first batch)."""
    query = select(projector_checkpoints.c.seq).where(projector_checkpoints.c.name == PROJECTION)

    async def checkpoint_seq() -> int:
        async with db.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    return checkpoint_seq


async def _watch_lag(db: Any, runtime: Any) -> None:
    """The projector child's lag, for this process's /metrics: engine seq minus its checkpoint."""
    checkpoint_seq = _checkpoint_reader(db)
    while True:
        try:
            seq = await checkpoint_seq()
            metrics.PROJECTOR_LAG.set(max(0, runtime.engine.seq - seq))
        except Exception as exc:  # a busy store: try again next time
            log.debug("projector lag not read", error=repr(exc))
        await asyncio.sleep(LAG_POLL_S)


def _serve_metrics(settings: Settings) -> Any:
    """`/metrics` of this process on CASHMARKETS_METRICS_PORT (not on the public HTTP port)."""
    if not settings.metrics_port:
        return None
    server = metrics.serve_port(settings.host, settings.metrics_port)
    log.info("metrics", url=f"http://{settings.host}:{settings.metrics_port}/metrics")
    return server


def _embedded_lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        url = store_url(settings)
        await migrate.upgrade(url)
        db = create_engine(url)
        runtime = build_runtime(settings)
        await runtime.start()
        projector: Projector | None = None
        child: Child | None = None
        if settings.projector_process:
            # Its own process: its SQL work no longer competes with requests for this one's GIL.
            child = Child("projector", ["projector"], env=_projector_env(settings))
            projector_task = asyncio.create_task(child.run(), name="projector-child")
            await child.wait_started()
            lag_task: asyncio.Task[None] | None = asyncio.create_task(_watch_lag(db, runtime), name="lag")
        else:
            # The projector reads the log through its own connection, off the writer's thread.
            in_process = build_projector(settings, db, _engine_seq(runtime))
            await in_process.log.open()
            runtime.subscribe(lambda _events: in_process.notify())
            projector_task = asyncio.create_task(in_process.run(), name="projector")
            projector = in_process
            lag_task = None
        feed = build_feed(settings, runtime_sink(runtime))
        feed_task = asyncio.create_task(feed.run(), name="price-feed") if feed is not None else None
        bot = (
            MarketMaker(runtime, interval_s=settings.spot_bot_interval_s)
            if settings.spot_bot_enabled
            else None
        )
        bot_task = asyncio.create_task(bot.run(), name="spot-bot") if bot is not None else None
        # The chart scheduler is a fenced singleton here too (its lease: a file lock on SQLite).
        chart_stop = asyncio.Event()
        chart_task = (
            asyncio.create_task(run_chart_role(settings, db, runtime, chart_stop), name="chart-role")
            if settings.chartgame_enabled
            else None
        )
        feed_metrics = watch_feed(feed) if feed is not None else None

        async def engine_ready() -> str:
            return "ok" if runtime.running else "runtime stopped"

        def projector_alive() -> bool:
            return child.alive if child is not None else not projector_task.done()

        projection = ProjectionHealth(
            local_reader(lambda: int(runtime.engine.seq), _checkpoint_reader(db), projector_alive),
            settings.ready_max_lag_ms,
        )
        projection_task = asyncio.create_task(projection.run(), name="projection-health")
        extras: dict[str, Any] = {
            "runtime": runtime,
            "projector": projector,
            "readiness": {"engine": engine_ready, "projector": projection.check},
        }
        services = build_services(settings, db, EmbeddedBus(runtime), EngineBalances(runtime), extras)
        limits = build_limiters(settings)
        _install(app, settings, services, limits)
        app.state.projection = projection
        registry = TopicRegistry()
        runtime.subscribe(EngineBridge(registry, runtime.engine))
        # Socket commands are charged to the same per-user buckets as HTTP requests.
        gateway = Gateway(
            registry,
            Sessions(services.tokens, services.users),
            gateway_limits(settings),
            SocketCommands(services, limits["user"]),
        )
        extras["gateway"] = gateway
        extras["ws_port"] = await gateway.start(settings.host, settings.gateway_port)
        metrics_server = _serve_metrics(settings)
        log.info("serving", mode="embedded", url=settings.base_url, seq=runtime.engine.seq)
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics.stop_port(metrics_server)
            await gateway.stop()
            chart_stop.set()
            if chart_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(chart_task, 10)
            if bot is not None and bot_task is not None:
                await bot.stop()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(bot_task, 5)
            if feed_metrics is not None:
                unwatch_feed(feed_metrics)
            if feed is not None and feed_task is not None:
                await feed.stop()
                feed_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed_task
            if lag_task is not None:
                lag_task.cancel()
            projection_task.cancel()
            if child is not None:
                await child.stop()
            projector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await projector_task
            if projector is not None:
                await projector.log.close()
            await runtime.stop()
            await services.idempotency.close()
            await db.dispose()

    return lifespan


def _distributed_lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        assert settings.redis_url is not None
        url = store_url(settings)
        await migrate.require_head(url)
        db = create_engine(url)
        bus = RedisBus(settings.redis_url, settings.redis_stream, build_engine().codec)
        await bus.start()

        async def engine_ready() -> str:
            return (
                "ok"
                if await bus.client.exists(engine_alive_key(settings.redis_stream))
                else "no engine heartbeat"
            )

        async def log_ready() -> str:
            await bus.client.ping()
            return "ok"

        projection = ProjectionHealth(
            beat_reader(bus.client, settings.redis_stream), settings.ready_max_lag_ms
        )
        projection_task = asyncio.create_task(projection.run(), name="projection-health")
        readiness = {"log": log_ready, "engine": engine_ready, "projector": projection.check}
        extras = {"bus": bus, "readiness": readiness}
        services = build_services(
            settings, db, bus, SqlBalances(db, bus.client, settings.redis_stream), extras
        )
        limits = build_limiters(settings, bus.client)  # in Redis: shared with every api and gateway
        _install(app, settings, services, limits)
        app.state.projection = projection
        metrics_server = _serve_metrics(settings)
        log.info("serving", mode="distributed", url=settings.base_url)
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics.stop_port(metrics_server)
            projection_task.cancel()
            await bus.close()
            await services.idempotency.close()
            await db.dispose()

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
            LeverageController,
            SpotController,
            ApiKeysController,
            BinanceController,
            ChartgameController,
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

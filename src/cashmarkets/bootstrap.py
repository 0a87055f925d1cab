"""The one bootstrap: the one place that chooses adapters and builds what each mode runs with.

    build_engine        the registered products (products/registry.py), C paths or not
    build_log           the command log: Redis Streams (distributed) or the SQLite journal
    build_snapshots     the snapshot store, and whether it migrates (embedded) or expects it done
    build_runtime       engine + log + snapshots
    build_projector     the projector over this deployment's log and store
    projector_in_process  its placement in `serve`: this process, or a child process
    build_services      the routes' typed services (tokens, users, keys, idempotency, bus...)
    build_limiters      the rate limiters: in memory (embedded) or in Redis (shared, distributed)
    build_gateway       the WebSocket gateway with its sessions, limits and socket commands
    start_embedded      `serve`'s parts, started, in a typed container (Started)
    start_distributed_api  a distributed API process's parts, started
    (the chart game's beacon source and chain adapter: runtime/chart_setup.py, its drivers')

Entry points (api/app.py's lifespans, runtime/processes.py, gateway/process.py, the CLI) call
these and choose nothing themselves (cosmicpython's bootstrap is the model). The API's modules
are imported inside the builders that need them: the engine process does not load Litestar.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from cashmarkets.core.engine import Engine, EngineConfig
from cashmarkets.log.base import CommandLog
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.ops.local_secrets import local_secret
from cashmarkets.ops.settings import Settings, native_from_env
from cashmarkets.products.registry import products as registered
from cashmarkets.runtime.runner import Runtime, RuntimeConfig
from cashmarkets.store.db import database_url
from cashmarkets.store.snapshots import SnapshotStore

if TYPE_CHECKING:
    from cashmarkets.api.ratelimit import RateLimiter
    from cashmarkets.api.services import Services
    from cashmarkets.gateway.server import Gateway
    from cashmarkets.gateway.topics import TopicRegistry

log = structlog.get_logger("cashmarkets.bootstrap")

# A revoked sign-in matters while its access tokens may live, plus this margin for clocks.
CLOCK_MARGIN_S = 60
# How often `serve` reads its projector child's checkpoint for the lag metric.
LAG_POLL_S = 1.0


def build_engine(native: bool | None = None) -> Engine:
    """The engine every process runs (live, replay, projector replica): same products, same state.
    `native`: run the C hot paths when built; None: as CASHMARKETS_NATIVE says (default on)."""
    config = EngineConfig(native=native_from_env() if native is None else native)
    # The ledger is the engine's own; each registered product brings the rest, in the registry's order.
    products = [m.engine_product() for m in registered() if m.engine_product is not None]
    return Engine(config, products=products)


def build_log(settings: Settings) -> CommandLog:
    if settings.redis_url:
        return RedisStreamLog(settings.redis_url, settings.redis_stream)
    return SqliteJournal(settings.journal_path, synchronous=settings.journal_synchronous)


def build_replica(settings: Settings) -> Runtime:
    """A read-only follower of the distributed log (gateway, chartgame): it writes no snapshots
    and no genesis, the engine process does; same engine build as every other process."""
    return Runtime(
        build_engine(settings.native),
        build_log(settings),
        build_snapshots(settings, migrate=False),
        RuntimeConfig(snapshots=False, genesis=False),
        scratch_dir=settings.data_dir,
    )


def build_runtime(settings: Settings) -> Runtime:
    config = RuntimeConfig(
        snapshot_interval_s=settings.snapshot_interval_s,
        snapshot_every_commands=settings.snapshot_every_commands,
        trim_log=settings.trim_log,
    )
    return Runtime(
        build_engine(settings.native),
        build_log(settings),
        build_snapshots(settings),
        config,
        scratch_dir=settings.data_dir,
    )


def build_projector(settings: Settings, db: Any, head_seq: Callable[[], Awaitable[int | None]] | None) -> Any:
    """The projector over this deployment's log and store (`db`: the store's SQLAlchemy engine);
    `head_seq` reports the engine's seq for the lag metric."""
    from cashmarkets.projection.projector import Projector  # (it imports the runtime's replay)

    return Projector(
        db,
        build_log(settings),
        SnapshotStore(store_url(settings), migrate=False, engine=db),
        engine_factory=partial(build_engine, settings.native),
        batch_records=settings.projector_batch_records,
        head_seq=head_seq,
        lease_ttl_s=settings.lease_ttl_s,
    )


def store_url(settings: Settings) -> str:
    return database_url(settings.database_url, settings.data_dir)


def build_snapshots(settings: Settings, *, migrate: bool | None = None) -> SnapshotStore:
    """Embedded mode migrates the store on start; distributed mode expects `cashmarkets migrate`."""
    url = store_url(settings)
    return SnapshotStore(url, migrate=not settings.database_url if migrate is None else migrate)


def projector_in_process(settings: Settings) -> bool:
    """`serve`'s projector: in this process, or (CASHMARKETS_PROJECTOR_PROCESS) a child process
    whose SQL work does not compete with requests for this one's GIL."""
    return not settings.projector_process


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


def faucet_daily_max(settings: Settings) -> dict[str, int]:
    from cashmarkets.store.faucet_totals import parse_daily_max

    try:
        return parse_daily_max(settings.faucet_daily_max)
    except ValueError as exc:
        raise SystemExit(f"CASHMARKETS_FAUCET_DAILY_MAX: {exc}") from None


def build_services(settings: Settings, db: Any, bus: Any, balances: Any, **parts: Any) -> Services:
    """The routes' services; `parts`: the mode's typed extras (runtime, projector, readiness...)."""
    from cashmarkets.api.security import PasswordHashing, TokenService
    from cashmarkets.api.services import Services
    from cashmarkets.integrations.email import mailer_from_url
    from cashmarkets.store.api_keys import ApiKeyStore
    from cashmarkets.store.faucet_totals import FaucetTotals
    from cashmarkets.store.idempotency import IdempotencyStore
    from cashmarkets.store.signin_throttle import SigninThrottle
    from cashmarkets.store.users import UserStore

    return Services(
        settings=settings,
        db=db,
        tokens=TokenService(jwt_secret(settings), settings.access_token_ttl_s),
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
        **parts,
    )


def build_limiters(settings: Settings, redis_client: Any = None) -> dict[str, RateLimiter]:
    """The rate limiters: in this process's memory (embedded), or in Redis (`redis_client`:
    distributed, shared by every API and gateway process)."""
    from cashmarkets.api.ratelimit import build_limiters as limiters

    return limiters(settings, redis_client)


def build_gateway(
    settings: Settings, services: Services, registry: TopicRegistry, user_limiter: RateLimiter | None
) -> Gateway:
    """The WebSocket gateway: sockets checked against the users' live state in the store
    (docs/websocket.md, 4001), socket commands charged to the same per-user buckets as HTTP."""
    from cashmarkets.api.security import Sessions
    from cashmarkets.api.ws_commands import SocketCommands
    from cashmarkets.gateway.server import Gateway, gateway_limits

    sessions = Sessions(services.tokens, services.users)
    return Gateway(registry, sessions, gateway_limits(settings), SocketCommands(services, user_limiter))


# ---- the modes' containers -------------------------------------------------------------------


@dataclass(eq=False)
class Started:
    """A mode's parts, started: what the HTTP app is built around. `stop()` stops them in the
    reverse order of their start (a start that fails half way stops what it had started)."""

    settings: Settings
    db: Any  # the store's AsyncEngine
    services: Services
    limits: dict[str, RateLimiter]
    projection: Any  # ProjectionHealth: /ready's projector check and its lag
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def stop(self) -> None:
        await self.stack.aclose()


async def start_embedded(settings: Settings) -> Started:
    """`serve`: migrate the store, recover the runtime, place the projector (here or a child
    process), start each product's drivers, the health checks, the services and the gateway."""
    stack = contextlib.AsyncExitStack()
    try:
        return await _start_embedded(settings, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _start_embedded(settings: Settings, stack: contextlib.AsyncExitStack) -> Started:
    from cashmarkets.gateway.bridge import EngineBridge
    from cashmarkets.gateway.topics import TopicRegistry
    from cashmarkets.products.module import EmbeddedContext
    from cashmarkets.runtime.bus import EmbeddedBus, EngineBalances
    from cashmarkets.runtime.projection_health import ProjectionHealth, local_reader
    from cashmarkets.store import migrate
    from cashmarkets.store.db import create_engine

    url = store_url(settings)
    await migrate.upgrade(url)
    db = create_engine(url)
    stack.push_async_callback(db.dispose)
    runtime = build_runtime(settings)
    await runtime.start()
    stack.push_async_callback(runtime.stop)
    projector, projector_alive = await _place_projector(settings, db, runtime, stack)
    # Each product's feeds, schedulers and bots; stopped in reverse order.
    context = EmbeddedContext(settings=settings, db=db, runtime=runtime)
    for module in registered():
        for driver in module.embedded_drivers:
            await stack.enter_async_context(driver(context))

    async def engine_ready() -> str:
        return "ok" if runtime.running else "runtime stopped"

    projection = ProjectionHealth(
        local_reader(lambda: int(runtime.engine.seq), _checkpoint_reader(db), projector_alive),
        settings.ready_max_lag_ms,
    )
    _task(stack, projection.run(), "projection-health")
    services = build_services(
        settings,
        db,
        EmbeddedBus(runtime),
        EngineBalances(runtime),
        runtime=runtime,
        projector=projector,
        readiness={"engine": engine_ready, "projector": projection.check},
    )
    stack.push_async_callback(services.idempotency.close)
    limits = build_limiters(settings)
    registry = TopicRegistry()
    runtime.subscribe(EngineBridge(registry, runtime.engine))
    services.gateway = build_gateway(settings, services, registry, limits["user"])
    services.ws_port = await services.gateway.start(settings.host, settings.gateway_port)
    stack.push_async_callback(services.gateway.stop)
    _serve_metrics(settings, stack)
    return Started(settings, db, services, limits, projection, stack)


async def _place_projector(
    settings: Settings, db: Any, runtime: Any, stack: contextlib.AsyncExitStack
) -> tuple[Any, Callable[[], bool]]:
    """(the in-process projector or None, whether the projector is alive)."""
    from cashmarkets.runtime.supervisor import Child

    if not projector_in_process(settings):
        child = Child("projector", ["projector"], env=_projector_env(settings))
        _task(stack, child.run(), "projector-child")
        stack.push_async_callback(child.stop)
        await child.wait_started()
        _task(stack, _watch_lag(db, runtime), "lag")
        return None, lambda: child.alive
    # The projector reads the log through its own connection, off the writer's thread.
    projector = build_projector(settings, db, _engine_seq(runtime))
    await projector.log.open()
    stack.push_async_callback(projector.log.close)
    runtime.subscribe(lambda _events: projector.notify())
    task = _task(stack, projector.run(), "projector")
    return projector, lambda: not task.done()


async def start_distributed_api(settings: Settings) -> Started:
    """A distributed API process: the store (at the schema's head), the bus to the engine
    process through Redis, balances from the projection, limiters in Redis."""
    stack = contextlib.AsyncExitStack()
    try:
        return await _start_distributed_api(settings, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _start_distributed_api(settings: Settings, stack: contextlib.AsyncExitStack) -> Started:
    from cashmarkets.runtime.distributed import RedisBus, SqlBalances, engine_alive_key
    from cashmarkets.runtime.projection_health import ProjectionHealth, beat_reader
    from cashmarkets.store import migrate
    from cashmarkets.store.db import create_engine

    assert settings.redis_url is not None
    url = store_url(settings)
    await migrate.require_head(url)
    db = create_engine(url)
    stack.push_async_callback(db.dispose)
    bus = RedisBus(settings.redis_url, settings.redis_stream, build_engine().codec)
    await bus.start()
    stack.push_async_callback(bus.close)

    async def engine_ready() -> str:
        alive = await bus.client.exists(engine_alive_key(settings.redis_stream))
        return "ok" if alive else "no engine heartbeat"

    async def log_ready() -> str:
        await bus.client.ping()
        return "ok"

    projection = ProjectionHealth(beat_reader(bus.client, settings.redis_stream), settings.ready_max_lag_ms)
    _task(stack, projection.run(), "projection-health")
    readiness = {"log": log_ready, "engine": engine_ready, "projector": projection.check}
    balances = SqlBalances(db, bus.client, settings.redis_stream)
    services = build_services(settings, db, bus, balances, readiness=readiness)
    stack.push_async_callback(services.idempotency.close)
    limits = build_limiters(settings, bus.client)  # in Redis: shared with every api and gateway
    _serve_metrics(settings, stack)
    return Started(settings, db, services, limits, projection, stack)


def _task(stack: contextlib.AsyncExitStack, coro: Any, name: str) -> asyncio.Task[Any]:
    """A task of the mode, cancelled (and awaited) when the mode stops."""
    task = asyncio.create_task(coro, name=name)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    stack.push_async_callback(cancel)
    return task


def _serve_metrics(settings: Settings, stack: contextlib.AsyncExitStack) -> None:
    """`/metrics` of this process on CASHMARKETS_METRICS_PORT (not on the public HTTP port)."""
    from cashmarkets.ops import metrics

    if not settings.metrics_port:
        return
    server = metrics.serve_port(settings.host, settings.metrics_port)
    stack.callback(metrics.stop_port, server)
    log.info("metrics", url=f"http://{settings.host}:{settings.metrics_port}/metrics")


def _engine_seq(runtime: Any) -> Callable[[], Awaitable[int]]:
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
    from sqlalchemy import select

    from cashmarkets.projection.projector import NAME
    from cashmarkets.store.tables import projector_checkpoints

    query = select(projector_checkpoints.c.seq).where(projector_checkpoints.c.name == NAME)

    async def checkpoint_seq() -> int:
        async with db.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    return checkpoint_seq


async def _watch_lag(db: Any, runtime: Any) -> None:
    """The projector child's lag, for this process's /metrics: engine seq minus its checkpoint."""
    from cashmarkets.ops import metrics

    checkpoint_seq = _checkpoint_reader(db)
    while True:
        try:
            seq = await checkpoint_seq()
            metrics.PROJECTOR_LAG.set(max(0, runtime.engine.seq - seq))
        except Exception as exc:  # a busy store: try again next time
            log.debug("projector lag not read", error=repr(exc))
        await asyncio.sleep(LAG_POLL_S)

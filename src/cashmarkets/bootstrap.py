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
    (the chart game's beacon source and chain adapter: runtime/chart_setup.py, its drivers')

Entry points (api/app.py's lifespans, runtime/processes.py, gateway/process.py, the CLI) call
these and choose nothing themselves (cosmicpython's bootstrap is the model). The API's modules
are imported inside the builders that need them: the engine process does not load Litestar.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

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

# A revoked sign-in matters while its access tokens may live, plus this margin for clocks.
CLOCK_MARGIN_S = 60


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

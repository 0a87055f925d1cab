"""The one place that chooses adapters: which log, which store, which products."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from cashmarkets.core.engine import Engine, EngineConfig
from cashmarkets.log.base import CommandLog
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.ops.settings import Settings, native_from_env
from cashmarkets.products.registry import products as registered
from cashmarkets.runtime.runner import Runtime, RuntimeConfig
from cashmarkets.store.db import database_url
from cashmarkets.store.snapshots import SnapshotStore


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
    from cashmarkets.projection.projector import Projector

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

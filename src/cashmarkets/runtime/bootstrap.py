"""The one place that chooses adapters: which log, which store, which products."""

from __future__ import annotations

from cashmarkets.core.engine import Engine
from cashmarkets.log.base import CommandLog
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.runner import Runtime, RuntimeConfig
from cashmarkets.store.snapshots import SqliteSnapshotStore


def build_engine() -> Engine:
    return Engine()


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
    return Runtime(build_engine(), build_log(settings), SqliteSnapshotStore(settings.store_path), config)

"""`cashmarkets gateway` (distributed mode): a WebSocket gateway process; run several on one port."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from cashmarkets.bootstrap import (
    build_gateway,
    build_limiters,
    build_replica,
    build_services,
    store_url,
)
from cashmarkets.gateway.bridge import EngineBridge
from cashmarkets.gateway.protocol import STREAM_INTERRUPTED, STREAM_RESUMED
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.ops import dependencies
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.bus import EngineBalances
from cashmarkets.runtime.distributed import RedisBus
from cashmarkets.runtime.processes import ignore_results, serve_metrics, stop_event, wait_for_dependencies
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine

log = structlog.get_logger("cashmarkets.processes")


def _log_stream_status(registry: Any, event: str) -> None:
    sent = registry.stream_status(event)
    log.info("subscribers told of the stream", stream_event=event, notices=sent)


async def run_gateway(settings: Settings) -> None:
    """Distributed mode: a WebSocket gateway (run several on one port: SO_REUSEPORT). It follows
    the Redis command log with its own engine replica (newest snapshot + replay, then tailing),
    turns the events into topics, and sends socket commands to the engine through Redis."""
    if not settings.distributed:
        raise SystemExit("cashmarkets gateway needs CASHMARKETS_DATABASE_URL and CASHMARKETS_REDIS_URL")
    assert settings.redis_url is not None
    url = store_url(settings)
    await wait_for_dependencies(settings)
    await migrate.require_head(url)
    stop = stop_event()
    runtime = build_replica(settings)
    registry = TopicRegistry()
    runtime.subscribe(EngineBridge(registry, runtime.engine))
    # Redis down: the replica stops hearing the log. The sockets stay open and every subscription
    # is told (then told again when it resumes, and the missed messages follow with their seqs).
    dependencies.watch(dependencies.REDIS).listeners.append(
        lambda up: _log_stream_status(registry, STREAM_RESUMED if up else STREAM_INTERRUPTED)
    )
    await runtime.start(follow=ignore_results)
    db = create_engine(url)
    bus = RedisBus(settings.redis_url, settings.redis_stream, runtime.engine.codec)
    await bus.start()
    services = build_services(settings, db, bus, EngineBalances(runtime))
    # The API processes' per-user buckets in Redis (same prefix): a socket command and an HTTP
    # request of one user take from one bucket, whichever processes serve them.
    user_limiter = build_limiters(settings, bus.client)["user"]
    gateway = build_gateway(settings, services, registry, user_limiter)
    port = await gateway.start(settings.host, settings.gateway_port, reuse_port=True)
    serve_metrics(settings)
    log.info("gateway running", port=port, seq=runtime.engine.seq, stream=settings.redis_stream)
    try:
        while not stop.is_set() and runtime.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await gateway.stop()
        await runtime.stop(snapshot=False)
        await bus.close()
        await db.dispose()
    if not stop.is_set():
        raise SystemExit("gateway stopped: the log could not be read or applied (see the log)")

"""The long-running processes of distributed mode (`cashmarkets engine`, `projector`, `poller`).
Each runs until SIGTERM or SIGINT, then stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
import sqlalchemy
import structlog

from cashmarkets.bootstrap import (
    build_engine,
    build_projector,
    build_replica,
    build_runtime,
    store_url,
)
from cashmarkets.ops import dependencies
from cashmarkets.ops.backoff import Backoff
from cashmarkets.ops.settings import Settings
from cashmarkets.products.registry import products as registered
from cashmarkets.runtime.distributed import (
    ENGINE_HEARTBEAT_S,
    ResultPublisher,
    engine_alive_key,
    publish_rules,
)
from cashmarkets.runtime.pricefeed import LogSink, build_feed, watch_feed
from cashmarkets.runtime.projection_health import start_heartbeat
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine

log = structlog.get_logger("cashmarkets.processes")


def serve_metrics(settings: Settings) -> None:
    """The processes without an HTTP API (engine, projector, poller, gateway, chartgame) expose
    /metrics on their own port; deploy/docker-compose.yml checks their health there."""
    if settings.metrics_port:
        from cashmarkets.ops.metrics import serve_port

        serve_port(settings.host, settings.metrics_port)


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _reachable(name: str, check: Callable[[], Awaitable[Any]]) -> None:
    """Until `check()` gets through: a process started during an outage waits for the dependency
    instead of exiting (a bad URL or a refused password is no outage: that error ends it)."""
    backoff = Backoff()
    while True:
        try:
            await check()
        except Exception as exc:
            if dependencies.dependency_down(exc, name) is None:
                raise
            dependencies.watch(name).down(exc, "starting")
            await backoff.sleep()
        else:
            dependencies.watch(name).up()
            return


async def wait_for_dependencies(settings: Settings, *, postgres: bool = True) -> None:
    """Wait until the configured Redis answers PING and (unless `postgres=False`: the poller
    needs no store) PostgreSQL SELECT 1. Their `cashmarkets_dependency_up` gauges exist from here."""
    if settings.redis_url:
        client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=5
        )
        try:
            await _reachable(dependencies.REDIS, client.ping)
        finally:
            await client.aclose()
    if postgres and settings.database_url:
        db = create_engine(store_url(settings))

        async def select_one() -> None:
            async with db.connect() as conn:
                await conn.execute(sqlalchemy.text("SELECT 1"))

        try:
            await _reachable(dependencies.POSTGRES, select_one)
        finally:
            await db.dispose()


async def run_engine(settings: Settings) -> None:
    """Recover, then apply the Redis command log in order, publishing every result."""
    if not settings.redis_url:
        raise SystemExit("cashmarkets engine needs CASHMARKETS_REDIS_URL (the command log)")
    await wait_for_dependencies(settings)
    if settings.database_url:
        await migrate.require_head(store_url(settings))
    stop = stop_event()
    serve_metrics(settings)
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(settings.redis_url)
    runtime = build_runtime(settings)
    publisher = ResultPublisher(client, runtime.engine.codec, settings.redis_stream)
    for module in registered():  # e.g. leverage's latest prices, kept in Redis for the API
        for subscriber in module.engine_subscribers:
            runtime.subscribe(subscriber(client, settings.redis_stream, runtime.engine))
    await runtime.start(follow=publisher)

    beat = asyncio.create_task(_heartbeat(client, settings.redis_stream, runtime))
    log.info("engine running", seq=runtime.engine.seq, stream=settings.redis_stream)
    try:
        while not stop.is_set() and runtime.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        with contextlib.suppress(Exception):  # Redis may be down: the key expires by itself
            await client.delete(engine_alive_key(settings.redis_stream))
        await runtime.stop()
        await client.aclose()
    if not stop.is_set():
        raise SystemExit("engine stopped: the log could not be read or applied (see the log)")


async def _heartbeat(client: redis.asyncio.Redis, stream: str, runtime: Any) -> None:
    """Refresh the engine's alive key (its seq) every ENGINE_HEARTBEAT_S, through Redis outages."""
    redis_dep = dependencies.watch(dependencies.REDIS)
    while True:
        try:
            # The rules first: an API process sends commands once it sees the engine alive.
            await publish_rules(client, stream, runtime.engine)
            await client.set(engine_alive_key(stream), runtime.engine.seq, ex=int(ENGINE_HEARTBEAT_S * 5))
        except Exception as exc:
            if dependencies.dependency_down(exc, dependencies.REDIS) is None:
                raise
            redis_dep.down(exc, "refreshing the engine heartbeat")
        else:
            redis_dep.up()
        await asyncio.sleep(ENGINE_HEARTBEAT_S)


async def run_projector(settings: Settings) -> None:
    """Project engine events into SQL until stopped (resumes exactly after its checkpoint)."""
    url = store_url(settings)
    await wait_for_dependencies(settings)
    if settings.database_url:
        await migrate.require_head(url)
    else:
        await migrate.upgrade(url)
    stop = stop_event()
    db = create_engine(url)
    client = redis.asyncio.Redis.from_url(settings.redis_url) if settings.redis_url else None

    async def engine_seq() -> int | None:
        # The engine process's heartbeat carries its seq; None while it is down.
        value = await client.get(engine_alive_key(settings.redis_stream)) if client is not None else None
        return None if value is None else int(value)

    projector = build_projector(settings, db, engine_seq if client is not None else None)
    serve_metrics(settings)
    await projector.log.open()
    task = asyncio.create_task(projector.run(), name="projector")
    beat = start_heartbeat(client, settings.redis_stream, projector, engine_seq)
    log.info("projector running")
    try:
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # a crashed projector exits non-zero with its error
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if beat is not None:
            beat.cancel()
        await projector.log.close()
        await db.dispose()
        if client is not None:
            await client.aclose()


async def run_poller(settings: Settings) -> None:
    """Append the configured price source's ticks to the Redis command log until stopped (or,
    for a replay, until the file ends). Run exactly one per stream."""
    from cashmarkets.log.redis_streams import RedisStreamLog

    if not settings.redis_url:
        raise SystemExit("cashmarkets poller needs CASHMARKETS_REDIS_URL (the command log)")
    command_log = RedisStreamLog(settings.redis_url, settings.redis_stream)
    sink = LogSink(command_log, build_engine().codec)
    feed = build_feed(settings, sink)
    if feed is None:
        raise SystemExit("cashmarkets poller: CASHMARKETS_PRICE_SOURCE is none, nothing to poll")
    await wait_for_dependencies(settings, postgres=False)
    stop = stop_event()
    await command_log.open()
    watch_feed(feed)
    serve_metrics(settings)
    task = asyncio.create_task(feed.run(), name="price-feed")
    log.info("poller running", source=settings.price_source, stream=settings.redis_stream)
    try:
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # a replay that ended returns; a crashed feed exits non-zero
    finally:
        await feed.stop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await command_log.close()
        log.info("poller stopped", appended=sink.appended, failed=sink.failed)


class _RemoteRuntime:
    """What the chart scheduler needs of a runtime, in distributed mode: the engine state (a
    replica following the log) and `submit` (through Redis to the engine), returning once the
    replica has applied the command too, so the scheduler reads its own writes."""

    def __init__(self, replica: Any, bus: Any, timeout_s: float) -> None:
        self.replica = replica
        self.engine = replica.engine
        self.bus = bus
        self.timeout_s = timeout_s

    async def submit(self, cmd: Any) -> Any:
        result = await self.bus.submit(cmd, self.timeout_s)
        while self.engine.seq < result.seq:
            if not self.replica.running:
                raise RuntimeError("the replica stopped")
            await asyncio.sleep(0.002)
        return result


async def run_chartgame(settings: Settings) -> None:
    """Distributed mode: the chart games' round scheduler, a fenced singleton (decision 018): it
    follows the log with a replica and, while it holds the "chartgame" lease, schedules rounds
    through Redis; a second one stands by (following the log) until the lease is free."""
    from cashmarkets.runtime.distributed import RedisBus
    from cashmarkets.runtime.singletons import run_chart_role

    if not settings.distributed:
        raise SystemExit("cashmarkets chartgame needs CASHMARKETS_DATABASE_URL and CASHMARKETS_REDIS_URL")
    assert settings.redis_url is not None
    url = store_url(settings)
    await wait_for_dependencies(settings)
    await migrate.require_head(url)
    stop = stop_event()
    db = create_engine(url)
    try:
        replica = build_replica(settings)
        await replica.start(follow=ignore_results)
        bus = RedisBus(settings.redis_url, settings.redis_stream, replica.engine.codec)
        await bus.start()
        remote = _RemoteRuntime(replica, bus, settings.command_timeout_s)
        serve_metrics(settings)
        ended = asyncio.Event()
        role = asyncio.create_task(run_chart_role(settings, db, remote, ended), name="chart-role")
        try:
            while not stop.is_set() and replica.running and not role.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            ended.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(role), 10)
            role.cancel()
            await replica.stop(snapshot=False)
            await bus.close()
        if role.done() and not role.cancelled():
            role.result()  # a crashed scheduler exits non-zero with its error
    finally:
        await db.dispose()


async def ignore_results(_applied: list[Any]) -> None:
    """A replica answers nobody: the engine process publishes the results."""

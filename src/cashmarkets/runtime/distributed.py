"""Distributed mode: API processes and one engine process meeting in Redis.

    API process                         Redis (keys per stream)            engine process
    RedisBus.submit(cmd) ── XADD {d: cmd, r: reply channel} ──> stream ──> Runtime (follow mode)
          ^                                                                   │ apply in log order
          └──── SUBSCRIBE cashmarkets:replies:<process> <── PUBLISH ──────────┤
    RedisBus.result_of(id) ── GET <stream>:result:<id> <── SET EX 24h ────────┘

The API never waits on a connection per request: one pub/sub connection per process receives
every reply for that process and resolves the waiting request by command id. Results are also
kept under their command id for a day, so a client that got a 504 can learn the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, Final, TypeVar

import msgspec
import redis.asyncio
import structlog

from cashmarkets.core.commands import Command
from cashmarkets.core.engine import EngineCodec, Result
from cashmarkets.core.ledger import Account
from cashmarkets.core.products.leverage import PositionView, Price, PriceTick, PriceUpdated
from cashmarkets.core.products.spot import OrderView
from cashmarkets.log.base import LogRecord
from cashmarkets.log.redis_streams import RedisStreamLog, entry_time_ns
from cashmarkets.ops import dependencies
from cashmarkets.ops.backoff import Backoff
from cashmarkets.ops.dependencies import DependencyUnavailable
from cashmarkets.runtime.bus import BadCommand, CommandTimeout, Depth

log = structlog.get_logger("cashmarkets.distributed")

# Per stream, like every key: "<stream>:result:<command id>".
RESULT_KEY: Final = "{}:result:{}"
RESULT_TTL_S: Final = 24 * 3600
REPLY_CHANNEL: Final = "cashmarkets:replies:{}"
ConfigT = TypeVar("ConfigT")
# Resubscribing to the reply channel after a lost connection: backoff bounds.
REPLY_RESUBSCRIBE_INITIAL_S: Final = 0.05
REPLY_RESUBSCRIBE_CAP_S: Final = 0.5


def engine_alive_key(stream: str) -> str:
    """Refreshed by the engine of this stream every ENGINE_HEARTBEAT_S (its value: the engine's
    seq); API readiness and the projector's lag read it. Per stream: deployments sharing a Redis
    must not see each other's engine."""
    return f"{stream}:engine:alive"


ENGINE_HEARTBEAT_S: Final = 1.0


class ResultPublisher:
    """The engine side: store each result under its command id and answer its caller."""

    def __init__(self, client: redis.asyncio.Redis, codec: EngineCodec, stream: str) -> None:
        self.client = client
        self.codec = codec
        self.stream = stream

    async def __call__(self, applied: list[tuple[LogRecord, Command, Result]]) -> None:
        encode = self.codec.encoder.encode
        async with self.client.pipeline(transaction=False) as pipe:
            queued = False
            for record, cmd, result in applied:
                if not record.reply_to and isinstance(cmd, PriceTick):
                    continue  # nobody asks for a tick's result: keep ~1 key per tick per day out
                data = encode(result)
                pipe.set(RESULT_KEY.format(self.stream, cmd.command_id), data, ex=RESULT_TTL_S)
                if record.reply_to:
                    pipe.publish(record.reply_to, data)
                queued = True
            if queued:
                await pipe.execute()


class RedisBus:
    """The API side of the command path in distributed mode."""

    def __init__(self, url: str, stream: str, codec: EngineCodec) -> None:
        self.codec = codec
        self.stream = stream
        self.log = RedisStreamLog(url, stream)
        self.client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url)
        self.channel = REPLY_CHANNEL.format(uuid.uuid4().hex)
        self._pending: dict[str, asyncio.Future[Result]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # The engine's heartbeat as last seen (every ENGINE_HEARTBEAT_S): False refuses commands
        # at once (503) instead of logging them for an engine that is not there to answer (504).
        # None: unknown (Redis unreachable; the append then fails by itself).
        self.engine_alive: bool | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.log.open()
        self._listener = asyncio.create_task(self._listen(), name="reply-listener")
        self._watcher = asyncio.create_task(self._watch_engine(), name="engine-watch")
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def close(self) -> None:
        for task in (self._listener, self._watcher, self._recovering):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.log.close()
        await self.client.aclose()

    async def _listen(self) -> None:
        decode = self.codec.result_decoder.decode
        # Short waits: while unsubscribed, replies are lost and their callers wait for a timeout.
        backoff = Backoff(REPLY_RESUBSCRIBE_INITIAL_S, REPLY_RESUBSCRIBE_CAP_S)
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                if backoff.attempts:  # resubscribed: replies sent meanwhile were lost
                    self._recovering = asyncio.create_task(self._look_up_pending())
                backoff.reset()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    result = decode(message["data"])
                    future = self._pending.get(result.command_id)
                    if future is not None and not future.done():
                        future.set_result(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection: resubscribe; waiters fall back to GET
                if backoff.attempts == 0:  # once per outage, not per retry
                    log.warning("reply channel lost; resubscribing", error=repr(exc))
                await backoff.sleep()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8

    async def _watch_engine(self) -> None:
        key = engine_alive_key(self.stream)
        while True:
            try:
                self.engine_alive = bool(await self.client.exists(key))
            except Exception:  # Redis down: unknown, and commands fail on the append anyway
                self.engine_alive = None
            await asyncio.sleep(ENGINE_HEARTBEAT_S)

    async def _look_up_pending(self) -> None:
        """Resolve the waiters whose reply went out while the channel was lost, from the results
        kept by command id (the engine SETs a result before it PUBLISHes it)."""
        for command_id, future in list(self._pending.items()):
            if future.done():
                continue
            try:
                stored = await self.result_of(command_id)
            except Exception:  # Redis gone again: the waiters' own timeouts look it up later
                return
            if stored is not None and not future.done():
                future.set_result(stored)

    async def submit(self, cmd: Command, timeout_s: float) -> Result:
        # No stamp: the engine takes the time from the stream entry id (decision 022).
        cmd.ts_ns = 0
        command_id = cmd.command_id
        future = self._pending.get(command_id)
        owner = future is None
        if owner and self.engine_alive is False:
            raise DependencyUnavailable("engine", "no engine heartbeat: the command was not logged")
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[command_id] = future
        try:
            if owner:
                try:
                    data = self.codec.encoder.encode(cmd)
                except (OverflowError, TypeError, ValueError, msgspec.EncodeError) as exc:
                    raise BadCommand(f"cannot log command: {exc}") from None
                positions = await self.log.append([data], reply_to=self.channel)
                # For the caller (e.g. a withdrawal's requested time): the log's time, as the
                # engine will see it (unless an earlier entry's time holds engine time later).
                cmd.ts_ns = entry_time_ns(positions[0])
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except TimeoutError:
                # The reply may have been lost with a dropped pub/sub connection: look it up.
                stored = await self.result_of(command_id)
                if stored is not None:
                    return stored
                raise CommandTimeout(command_id) from None
        finally:
            if owner:
                self._pending.pop(command_id, None)

    async def result_of(self, command_id: str) -> Result | None:
        data = await self.client.get(RESULT_KEY.format(self.stream, command_id))
        return None if data is None else self.codec.result_decoder.decode(data)


def prices_key(stream: str) -> str:
    """A hash symbol -> latest Price (MessagePack), written by the engine process."""
    return f"{stream}:prices"


_PRICE_DECODER = msgspec.msgpack.Decoder(Price)


def rules_key(stream: str) -> str:
    """A hash product -> its configuration in force (MessagePack of its config_type), written by
    the engine process from its state: what distributed API processes validate against
    (decision 023), never their own defaults."""
    return f"{stream}:rules"


async def publish_rules(client: redis.asyncio.Redis, stream: str, engine: Any) -> None:
    """Write every configurable product's configuration in force (the log's, or the implicit
    genesis's) to `rules_key`. Idempotent: the heartbeat calls it."""
    encode = engine.codec.encoder.encode
    mapping = {
        name: encode(product.config)
        for name, product in sorted(engine.products.items())
        if product.config_type is not None
    }
    if mapping:
        await client.hset(rules_key(stream), mapping=mapping)


class PricePublisher:
    """The engine side: keep the latest price per symbol in Redis for API processes."""

    def __init__(self, client: redis.asyncio.Redis, stream: str, product: Any) -> None:
        self.client = client
        self.key = prices_key(stream)
        self.product = product
        self._task: asyncio.Task[None] | None = None
        self._dirty = False

    def __call__(self, events: list[Any]) -> None:
        if any(isinstance(e, PriceUpdated) for e in events):
            self._dirty = True
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        backoff = Backoff()
        while self._dirty:
            self._dirty = False
            mapping = {s: msgspec.msgpack.encode(p) for s, p in self.product.prices.items()}
            if not mapping:
                continue
            try:
                await self.client.hset(self.key, mapping=mapping)
            except Exception as exc:
                if dependencies.dependency_down(exc, dependencies.REDIS) is None:
                    raise
                # Redis down: write the latest prices once it is back (the follow loop logs it).
                dependencies.watch(dependencies.REDIS).down(exc, "publishing prices")
                self._dirty = True
                await backoff.sleep()


class SqlBalances:
    """Distributed API processes read balances and positions from the projection (it may lag by a
    batch; command responses carry the engine's own figures) and prices from Redis."""

    def __init__(self, db: Any, client: Any = None, stream: str = "") -> None:
        self.db = db
        self.client = client
        self.stream = stream

    async def accounts_of(self, owner: str) -> list[Account]:
        from cashmarkets.store.queries import accounts_of

        return await accounts_of(self.db, owner)

    async def open_positions(self, owner: str) -> list[PositionView]:
        from cashmarkets.store.queries import open_positions

        return await open_positions(self.db, owner)

    async def open_orders(self, owner: str, market: str | None) -> list[OrderView]:
        from cashmarkets.store import spot_queries

        return await spot_queries.open_orders(self.db, owner, market)

    async def open_order(self, order_id: int) -> OrderView | None:
        from cashmarkets.store import spot_queries

        found = await spot_queries.order(self.db, order_id)
        return found if found is not None and found.remaining_lots > 0 else None

    async def depth(self, market: str, limit: int) -> Depth:
        from cashmarkets.store import spot_queries

        return await spot_queries.depth(self.db, market, limit)

    async def prices(self) -> list[Price]:
        raw = await self.client.hgetall(prices_key(self.stream))
        decoded = [_PRICE_DECODER.decode(v) for _, v in sorted(raw.items())]
        return decoded

    async def rules(self, product: str, config_type: type[ConfigT]) -> ConfigT:
        raw = await self.client.hget(rules_key(self.stream), product)
        if raw is None:
            raise DependencyUnavailable("engine", f"the engine has not published the {product} rules yet")
        return msgspec.msgpack.decode(raw, type=config_type)

"""Engine time comes from where commands are ordered (issue 17 item 4, decision 022): the Redis
entry id in distributed mode, the runtime's clock at append in embedded mode. A host whose clock
runs an hour fast stamps what it likes into its commands; engine time does not follow it, and a
price that has gone stale is still refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from cashmarkets.core import codes
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.leverage import LeverageConfig, LeverageProduct, OpenPosition, PriceTick
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.runtime.distributed import RedisBus, ResultPublisher, engine_alive_key
from cashmarkets.runtime.pricefeed import LogSink
from cashmarkets.runtime.runner import Runtime, RuntimeConfig, replay
from cashmarkets.store.snapshots import SnapshotStore

REDIS_URL = "redis://127.0.0.1:6379/0"
HOUR_NS = 3600 * 1_000_000_000
STALE_AFTER_NS = 1_000_000_000
USDC = 1_000_000


def fast_clock_ns() -> int:
    """The clock of a host one hour ahead."""
    return time.time_ns() + HOUR_NS


def engine() -> Engine:
    return Engine(products=[LeverageProduct.factory(LeverageConfig(stale_after_ns=STALE_AFTER_NS))])


def tick(n: int) -> PriceTick:
    return PriceTick(command_id=f"tick-{n}", symbol="BTC", bid=6_500_000, ask=6_500_100, update_id=n)


def open_btc(n: int) -> OpenPosition:
    return OpenPosition(
        command_id=f"open-{n}", owner="alice", symbol="BTC", side="long", margin=10 * USDC, leverage=2
    )


def near_now(ts_ns: int) -> bool:
    return abs(ts_ns - time.time_ns()) < 60 * 1_000_000_000


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"cashmarkets:test:time:{uuid.uuid4().hex}"
    yield name
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.delete(name, engine_alive_key(name))
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_fast_api_host_does_not_move_distributed_engine_time(tmp_path: Path, stream: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    await client.set(engine_alive_key(stream), 0)  # the heartbeat the API's bus waits for
    runtime = Runtime(
        engine(),
        RedisStreamLog(REDIS_URL, stream),
        SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/store.db"),
        RuntimeConfig(snapshots=False),
        scratch_dir=tmp_path,
    )
    await runtime.start(follow=ResultPublisher(client, runtime.codec, stream))
    bus = RedisBus(REDIS_URL, stream, runtime.codec)
    await bus.start()
    feed_log = RedisStreamLog(REDIS_URL, stream)
    await feed_log.open()
    try:

        async def from_fast_host(cmd: Command) -> object:
            cmd.ts_ns = fast_clock_ns()  # what a host that stamps its own clock would send
            return await bus.submit(cmd, 10)

        assert isinstance(
            await from_fast_host(Deposit(command_id="d", owner="alice", asset="USDC", amount=100 * USDC)),
            Accepted,
        )
        # Even bytes that carry the fast time (an appender that stamps) are timed by the entry id.
        skewed = Deposit(command_id="d2", owner="alice", asset="USDC", amount=USDC, ts_ns=fast_clock_ns())
        await feed_log.append([runtime.codec.encoder.encode(skewed)])
        await LogSink(feed_log, runtime.codec)(tick(1))
        assert isinstance(await from_fast_host(open_btc(1)), Accepted)
        assert near_now(runtime.engine.ts_ns), "engine time followed the fast host"
        # The engine process logged the genesis on the empty stream (decision 023), then followed it.
        assert runtime.engine.rules["leverage"].seq == 1
        # The price ages in engine (Redis) time: past the limit, trading on it is refused.
        await asyncio.sleep(STALE_AFTER_NS / 1e9 + 0.5)
        stale = await from_fast_host(open_btc(2))
        assert isinstance(stale, Rejected) and stale.code == codes.STALE_PRICE, stale
        state_hash = runtime.engine.state_hash()
    finally:
        await feed_log.close()
        await bus.close()
        await runtime.stop(snapshot=False)
        await client.aclose()
    # A replay reads the same times from the log and reaches the same state.
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    replica = engine()
    await replay(replica, log, None)
    await log.close()
    assert replica.state_hash() == state_hash


async def test_embedded_engine_time_is_the_runtimes_clock_at_append(tmp_path: Path) -> None:
    clock = [time.time_ns()]
    runtime = Runtime(
        engine(),
        SqliteJournal(tmp_path / "journal.db"),
        SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/store.db"),
        scratch_dir=tmp_path,
        clock_ns=lambda: clock[0],
    )
    await runtime.start()
    fund = Deposit(command_id="d", owner="alice", asset="USDC", amount=100 * USDC, ts_ns=fast_clock_ns())
    assert isinstance(await runtime.submit(fund), Accepted)
    assert runtime.engine.ts_ns == clock[0], "engine time followed the submitter's stamp"
    await runtime.submit(tick(1))
    clock[0] += STALE_AFTER_NS + 1
    stale = await runtime.submit(open_btc(1))
    assert isinstance(stale, Rejected) and stale.code == codes.STALE_PRICE, stale
    clock[0] -= HOUR_NS  # a clock stepped back holds engine time still
    await runtime.submit(tick(2))
    assert runtime.engine.ts_ns == clock[0] + HOUR_NS
    state_hash = runtime.engine.state_hash()
    await runtime.stop(snapshot=False)
    journal = SqliteJournal(tmp_path / "journal.db")
    await journal.open()
    replica = engine()
    await replay(replica, journal, None)
    await journal.close()
    assert replica.state_hash() == state_hash

"""The price poller of distributed mode: the real Backpack client against a local Backpack-protocol
server, appending PriceTick commands to a real Redis Stream; its metrics; `cashmarkets poller
--replay` as a process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.products.leverage import PriceTick
from cashmarkets.log.base import LogRecord
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.ops.metrics import REGISTRY
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.pricefeed import LogSink, build_feed, unwatch_feed, watch_feed
from cashmarkets.runtime.runner import stamp_next
from tests.fakes.backpack import BTC_STREAM, ETH_STREAM, FakeBackpack, book, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.redis


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"cashmarkets:test:poller:{uuid.uuid4().hex}"
    yield name
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    await client.delete(name)
    await client.aclose()


@pytest.fixture
async def server() -> AsyncIterator[FakeBackpack]:
    fake = FakeBackpack()
    await fake.start()
    yield fake
    await fake.close()


async def logged_records(stream: str) -> list[LogRecord]:
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    try:
        return await log.read_from(None, 1_000)
    finally:
        await log.close()


async def logged_ticks(stream: str) -> list[PriceTick]:
    decode = build_engine().codec.command_decoder.decode
    return [decode(r.data) for r in await logged_records(stream)]


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_backpack_ticks_land_in_the_redis_log_as_commands(server: FakeBackpack, stream: str) -> None:
    settings = Settings(price_source="backpack", backpack_url=server.url, price_interval_ms=0)
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    sink = LogSink(log, build_engine().codec)
    feed = build_feed(settings, sink)
    task = asyncio.create_task(feed.run())
    try:
        await server.wait_subscribed()
        await server.publish(BTC_STREAM, book(BTC_STREAM, 10, bid="65000.1", ask="65000.2"))
        await server.publish(ETH_STREAM, book(ETH_STREAM, 11, bid="2500.05", ask="2500.07"))
        await server.publish(BTC_STREAM, book(BTC_STREAM, 9, bid="1", ask="2"))  # out of order: dropped
        await server.publish(BTC_STREAM, book(BTC_STREAM, 12, bid="65001", ask="65002"))
        await wait_until(lambda: sink.appended == 3)
    finally:
        await feed.stop()
        await asyncio.wait_for(task, 5)
        await log.close()
    ticks = await logged_ticks(stream)
    assert [(t.command_id, t.symbol, t.bid, t.ask, t.update_id) for t in ticks] == [
        ("tick:BTC:10", "BTC", 6_500_010, 6_500_020, 10),
        ("tick:ETH:11", "ETH", 250_005, 250_007, 11),
        ("tick:BTC:12", "BTC", 6_500_100, 6_500_200, 12),
    ]
    # Not stamped by the poller's host: the entry id's time is the engine's (decision 022).
    assert all(t.ts_ns == 0 for t in ticks)
    records = await logged_records(stream)
    assert all(r.log_ts_ns is not None and r.log_ts_ns > 0 for r in records)
    # The engine applies them as it would from the live log.
    engine = build_engine()
    for tick, record in zip(ticks, records, strict=True):
        stamp_next(tick, engine.seq, engine.ts_ns, record)
        engine.apply(tick)
    assert engine.ts_ns == records[-1].log_ts_ns
    assert engine.products["leverage"].prices["BTC"].bid == 6_500_100
    assert feed.stats.dropped_out_of_order == 1


async def test_feed_metrics_flag_a_stale_symbol(server: FakeBackpack, stream: str) -> None:
    settings = Settings(
        price_source="backpack", backpack_url=server.url, price_interval_ms=0, price_stale_after_s=0.3
    )
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    feed = build_feed(settings, LogSink(log, build_engine().codec))
    collector = watch_feed(feed)
    task = asyncio.create_task(feed.run())
    try:
        await server.wait_subscribed()
        await asyncio.sleep(0.4)
        for update_id in (1, 2):  # BTC keeps updating, ETH never does
            await server.publish(BTC_STREAM, book(BTC_STREAM, update_id))
        await wait_until(lambda: feed.stats.forwarded == 2)
        assert sample("cashmarkets_price_stale", {"symbol": "BTC"}) == 0.0
        assert sample("cashmarkets_price_stale", {"symbol": "ETH"}) == 1.0
        eth_age = sample("cashmarkets_price_age_seconds", {"symbol": "ETH"})
        assert eth_age is not None and eth_age > 0.3
        assert sample("cashmarkets_feed_ticks_total", {"outcome": "forwarded"}) == 2.0
        assert sample("cashmarkets_feed_connections_total", {"event": "connect"}) == 1.0
    finally:
        unwatch_feed(collector)
        await feed.stop()
        await asyncio.wait_for(task, 5)
        await log.close()
    assert sample("cashmarkets_price_stale", {"symbol": "ETH"}) is None  # unregistered


async def test_a_redis_outage_loses_ticks_not_the_poller() -> None:
    log = RedisStreamLog("redis://127.0.0.1:1/0", "cashmarkets:test:unreachable")
    sink = LogSink(log, build_engine().codec)
    await sink(PriceTick(command_id="tick:BTC:1", symbol="BTC", bid=1, ask=2, update_id=1))
    assert (sink.appended, sink.failed) == (0, 1)
    await log.close()


def test_poller_process_replays_a_recording_into_the_log(tmp_path: Path, stream: str) -> None:
    recording = tmp_path / "ticks.jsonl"
    lines = [
        {"stream": BTC_STREAM, "data": book(BTC_STREAM, u, bid=f"6500{u}", ask=f"6500{u}.5")}
        for u in (1, 2, 3)
    ]
    lines.append({"stream": ETH_STREAM, "data": book(ETH_STREAM, 4, bid="2500", ask="2500.5")})
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {
        "PATH": "/usr/bin:/bin",
        "CASHMARKETS_REDIS_URL": REDIS_URL,
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_PRICE_INTERVAL_MS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "poller", "--replay", str(recording), "--speed", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ticks = asyncio.run(logged_ticks(stream))
    assert [(t.symbol, t.update_id, t.bid) for t in ticks] == [
        ("BTC", 1, 6_500_100),
        ("BTC", 2, 6_500_200),
        ("BTC", 3, 6_500_300),
        ("ETH", 4, 250_000),
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "poller", "--replay", str(tmp_path / "nope.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "no replay file" in missing.stderr

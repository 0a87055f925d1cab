"""Distributed rate limits: token buckets in Redis, shared by every API process."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio

from cashmarkets.api.middleware import RedisTokenBuckets, TokenBuckets

pytestmark = pytest.mark.redis


async def test_redis_buckets_allow_the_burst_then_ask_to_wait_and_refill() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"cm:test:rl:{uuid.uuid4().hex}:"
    try:
        buckets = RedisTokenBuckets(client, rate_per_s=10.0, burst=3, prefix=prefix)
        waits = [await buckets.take("ip:1.2.3.4") for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert 0.0 < waits[3] <= 0.1 + 1e-6
        # Another key has its own bucket; a second process (another client) shares the first.
        assert await buckets.take("ip:5.6.7.8") == 0.0
        other = RedisTokenBuckets(redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0"), 10.0, 3, prefix)
        assert await other.take("ip:1.2.3.4") > 0.0
        await asyncio.sleep(0.25)  # refills at 10/s
        assert await buckets.take("ip:1.2.3.4") == 0.0
        assert 0 < await client.ttl(f"{prefix}ip:1.2.3.4") <= 2
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_memory_buckets_behave_the_same() -> None:
    buckets = TokenBuckets(rate_per_s=10.0, burst=3)
    waits = [await buckets.take("k") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and 0.0 < waits[3] <= 0.1 + 1e-6
    await asyncio.sleep(0.25)
    assert await buckets.take("k") == 0.0

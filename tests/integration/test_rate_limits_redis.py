"""Distributed rate limits: token buckets in Redis, shared by every API and gateway process."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio

from cashmarkets.api.ratelimit import REDIS_PREFIX, RedisTokenBuckets, TokenBuckets, build_limiters, user_key
from cashmarkets.api.ws_commands import SocketCommands
from cashmarkets.gateway.protocol import ErrorCode, MsgType, ProtocolError
from cashmarkets.ops.settings import Settings

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


async def test_an_api_process_and_a_gateway_process_share_a_users_bucket() -> None:
    """What `cashmarkets api` and `cashmarkets gateway` each build, on their own Redis clients:
    one bucket per user, so what one spends the other cannot spend again."""
    settings = Settings.from_env({}, rate_limit_user_burst=3, rate_limit_user_per_s=0.01)
    api_client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    gateway_client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    user = uuid.uuid4().hex
    try:
        api = build_limiters(settings, api_client)
        gateway_user = build_limiters(settings, gateway_client)["user"]
        assert isinstance(api["user"], RedisTokenBuckets) and isinstance(gateway_user, RedisTokenBuckets)
        assert [await api["user"].take(user_key(user)) for _ in range(2)] == [0.0, 0.0]
        assert await gateway_user.take(user_key(user)) == 0.0  # the third of the burst of 3
        assert await api["user"].take(user_key(user)) > 1.0  # spent, whichever process spent it
        # The gateway's command path refuses the user's next socket command before any work
        # (no services needed: it never gets that far).
        commands = SocketCommands(None, gateway_user)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError) as refused:
            await commands(user, MsgType.GET_BALANCE, {})
        assert (refused.value.code, refused.value.reason) == (ErrorCode.RATE_LIMITED, "rate_limited")
        assert refused.value.retry_after_ms > 1_000
        # The IP buckets are apart from the users'.
        assert await api["ip"].take("ip:10.0.0.1") == 0.0
    finally:
        await api_client.delete(f"{REDIS_PREFIX}{user_key(user)}", f"{REDIS_PREFIX}ip:10.0.0.1")
        await api_client.aclose()
        await gateway_client.aclose()

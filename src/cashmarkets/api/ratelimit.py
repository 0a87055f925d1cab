"""Rate limits: token buckets per client IP and per user, behind one call, `take(key) -> wait_s`
(0: allowed, and one token is spent; else the seconds until one more would be).

One bucket per user for every channel the user acts through, under the key `user_key(id)`:

- HTTP requests with a bearer token or the auth cookie (the edge middleware, `/api/` paths);
- the Binance-compatible `/api/v3` routes signed with an API key (charged to the key's user);
- WebSocket commands (OPEN_POSITION, CLOSE_POSITION, GET_BALANCE; `SocketCommands`).

Embedded mode (`serve`): the buckets are in memory, one `TokenBuckets` object shared by the API
and the gateway of the one process. Distributed mode: the buckets are Redis hashes updated by one
Lua script (atomic, timed by the Redis server's clock), under the same key prefix in every `api`
and `gateway` process, so a user has one bucket whichever process or channel they come through.

Refusals count in `cashmarkets_rate_limited_total{kind}`: ip, user (HTTP), apikey_user (`/api/v3`),
ws_user (sockets).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Final, Protocol

from cashmarkets.ops.settings import Settings

# Buckets kept in memory (per IP and per user); the least recently used are forgotten beyond this.
RATE_BUCKETS_MAX: Final = 100_000
# Every process of a distributed deployment must use this prefix: it is what makes the buckets shared.
REDIS_PREFIX: Final = "cm:rl:"
# The request scope's state key naming the user the edge middleware charged for this request.
CHARGED_USER: Final = "rate_charged_user"


class RateLimiter(Protocol):
    rate_per_s: float
    burst: int

    async def take(self, key: str) -> float:
        """0 if allowed (one token spent), else the seconds to wait before one more would be."""
        ...


def user_key(user_id: str) -> str:
    """The one bucket of a user, whatever the channel."""
    return f"user:{user_id}"


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


def retry_after_s(wait_s: float) -> int:
    """Whole seconds for a `Retry-After` header (at least 1)."""
    return max(1, math.ceil(wait_s))


def retry_after_ms(wait_s: float) -> int:
    return max(1, math.ceil(wait_s * 1000))


class TokenBuckets:
    """In-memory token buckets (embedded mode): `rate_per_s` refill, `burst` capacity."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str) -> float:
        return self.take_now(key)

    def take_now(self, key: str) -> float:
        """0 if allowed, else the seconds to wait before one more request would be."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > RATE_BUCKETS_MAX:
            self._buckets.popitem(last=False)
        return wait


# One atomic step of a token bucket kept in a Redis hash, timed by the Redis server's clock so
# that processes on different machines agree.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisTokenBuckets:
    """Token buckets shared by every process that uses the same Redis and prefix (distributed)."""

    def __init__(self, client: Any, rate_per_s: float, burst: int, prefix: str = REDIS_PREFIX) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.prefix = prefix
        self._script = client.register_script(_BUCKET_LUA)

    async def take(self, key: str) -> float:
        wait = await self._script(keys=[f"{self.prefix}{key}"], args=[self.rate_per_s, self.burst])
        return float(wait)


async def take(limiter: RateLimiter, key: str) -> float:
    """`limiter.take(key)`; the in-memory buckets are called directly (one coroutine less)."""
    return limiter.take_now(key) if isinstance(limiter, TokenBuckets) else await limiter.take(key)


def build_limiters(settings: Settings, redis_client: Any = None) -> dict[str, RateLimiter]:
    """{"ip": ..., "user": ...} from the settings: in memory, or in Redis when a client is given
    (every API and gateway process of a deployment builds them here, with the same prefix)."""
    if redis_client is None:
        return {
            "ip": TokenBuckets(settings.rate_limit_ip_per_s, settings.rate_limit_ip_burst),
            "user": TokenBuckets(settings.rate_limit_user_per_s, settings.rate_limit_user_burst),
        }
    return {
        "ip": RedisTokenBuckets(redis_client, settings.rate_limit_ip_per_s, settings.rate_limit_ip_burst),
        "user": RedisTokenBuckets(
            redis_client, settings.rate_limit_user_per_s, settings.rate_limit_user_burst
        ),
    }


__all__ = [
    "CHARGED_USER",
    "REDIS_PREFIX",
    "RateLimiter",
    "RedisTokenBuckets",
    "TokenBuckets",
    "build_limiters",
    "ip_key",
    "retry_after_ms",
    "retry_after_s",
    "take",
    "user_key",
]

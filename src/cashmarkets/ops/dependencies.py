"""Which failures mean "a dependency is down, try again later" rather than "a bug".

A request refused because Redis, PostgreSQL or the engine is unreachable answers 503
`dependency_unavailable` with `Retry-After` (HTTP) or UNAVAILABLE with reason
`dependency_unavailable` (WebSocket), never 500 `internal_error`: a client must be able to tell an
outage (retry, with the same idempotency key) from a bug (quote the request id).
"""

from __future__ import annotations

from typing import Final

import asyncpg
import redis.exceptions
import sqlalchemy.exc

CODE: Final = "dependency_unavailable"
# What clients are told to wait before a retry (Retry-After, seconds): heartbeats are renewed
# every second, so a dependency that is back is seen within about that long.
RETRY_AFTER_S: Final = 1
# The cause chain is followed this deep (SQLAlchemy wraps asyncpg, which wraps OSError).
_CAUSE_DEPTH_MAX: Final = 4


class DependencyUnavailable(Exception):
    """Raised where we detect an outage ourselves (e.g. no engine heartbeat before a command)."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(detail or f"{dependency} is unavailable")
        self.dependency = dependency


_REDIS_DOWN: Final = (
    redis.exceptions.ConnectionError,  # refused, reset; BusyLoadingError (replaying its AOF)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica not yet promoted after a failover
)
_STORE_DOWN: Final = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # the pool had no connection to give in time
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.exceptions.InterfaceError,  # e.g. "connection is closed"
)


def unavailable(exc: BaseException | None) -> str | None:
    """The dependency `exc` says is down ("redis", "store", "engine", "network"), or None when it is not an
    outage (then it is a bug, or an expected refusal handled elsewhere)."""
    for _ in range(_CAUSE_DEPTH_MAX):
        if exc is None:
            return None
        if isinstance(exc, DependencyUnavailable):
            return exc.dependency
        if isinstance(exc, _REDIS_DOWN):
            return "redis"
        if isinstance(exc, _STORE_DOWN):
            return "store"
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return "store"
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return "network"  # refused / reset / timed out while connecting (asyncpg lets these through)
        exc = exc.__cause__ or exc.__context__
    return None

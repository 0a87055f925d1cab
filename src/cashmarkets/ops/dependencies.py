"""What a long-running process waits for, and what makes it exit.

Two kinds of failure, kept apart on purpose:

- **A dependency is down** (Redis or PostgreSQL refused, dropped or timed out a connection, or is
  still loading/starting): nothing is wrong with our state, so the process waits (ops/backoff.py)
  and resumes where it was. `dependency_down(exc)` names the dependency.
- **Anything else** (a corrupted log, a configuration error, a rules/version mismatch, a bug) is
  fatal: retrying cannot fix it, so the process exits non-zero with the error.

`watch(name)` is the process's view of one dependency: it logs once when waiting starts and once
when the dependency is back (not per retry), sets `cashmarkets_dependency_up{dependency}` 1/0,
and tells its listeners (the gateway sends its clients a "stream interrupted" notice).

For requests (dist-health): which failures mean "a dependency is down, try again later" rather than "a bug".

A request refused because Redis, PostgreSQL or the engine is unreachable answers 503
`dependency_unavailable` with `Retry-After` (HTTP) or UNAVAILABLE with reason
`dependency_unavailable` (WebSocket), never 500 `internal_error`: a client must be able to tell an
outage (retry, with the same idempotency key) from a bug (quote the request id).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import asyncpg
import redis.exceptions
import sqlalchemy.exc
import structlog

from cashmarkets.ops import metrics

log = structlog.get_logger("cashmarkets.dependencies")

REDIS: Final = "redis"
POSTGRES: Final = "postgres"
# How far down a chain of causes (SQLAlchemy -> adapter -> asyncpg -> OSError) to look.
_CAUSE_DEPTH_MAX: Final = 8


def _asyncpg_connection_errors() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg.exceptions as pg
    except ImportError:  # SQLite-only installs
        return ()
    return (
        pg.PostgresConnectionError,  # SQLSTATE class 08
        pg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
        pg.AdminShutdownError,  # 57P01: stop -m fast / immediate
        pg.CrashShutdownError,  # 57P02
        pg.InterfaceError,  # the connection is closed / gone
    )


_PG_ERRORS: Final = _asyncpg_connection_errors()


def dependency_down(exc: BaseException, default: str | None = None) -> str | None:
    """The dependency `exc` says is unreachable ("redis", "postgres", or what a
    DependencyUnavailable names, e.g. "engine" before its first heartbeat); `default` for a bare
    connection error (OSError, TimeoutError) raised by a call to it; None when `exc` is not an
    outage and must not be waited out."""
    seen: BaseException | None = exc
    bare = False
    for _ in range(_CAUSE_DEPTH_MAX):
        if seen is None:
            break
        if isinstance(seen, DependencyUnavailable):
            return seen.dependency
        if isinstance(seen, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return REDIS
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and (
            seen.connection_invalidated
            or isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        ):
            return POSTGRES
        if isinstance(seen, sqlalchemy.exc.TimeoutError) or (_PG_ERRORS and isinstance(seen, _PG_ERRORS)):
            return POSTGRES
        if isinstance(seen, OSError | TimeoutError):  # ConnectionRefusedError, reset, ...
            bare = True
        nested = getattr(seen, "orig", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return default if bare else None


Listener = Callable[[bool], None]


class Dependency:
    """One dependency as this process sees it: up until a call fails, down until one succeeds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_up = True
        self.down_since = 0.0
        self.listeners: list[Listener] = []
        self._gauge = metrics.DEPENDENCY_UP.labels(name)
        self._gauge.set(1)

    def down(self, exc: BaseException, doing: str) -> None:
        """A call failed for want of this dependency: log and tell the listeners once."""
        if not self.is_up:
            return
        self.is_up = False
        self.down_since = time.monotonic()
        self._gauge.set(0)
        log.warning("waiting for dependency", dependency=self.name, doing=doing, error=repr(exc))
        self._tell(False)

    def up(self) -> None:
        """A call succeeded: if it was down, log and tell the listeners once."""
        if self.is_up:
            return
        self.is_up = True
        self._gauge.set(1)
        log.info("dependency back", dependency=self.name, down_s=round(time.monotonic() - self.down_since, 3))
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(up)
            except Exception as exc:  # a listener's bug must not stop the waiting
                log.error("dependency listener failed", dependency=self.name, error=repr(exc))


_WATCHED: dict[str, Dependency] = {}


def watch(name: str) -> Dependency:
    """This process's one view of dependency `name`."""
    found = _WATCHED.get(name)
    if found is None:
        found = _WATCHED[name] = Dependency(name)
    return found


CODE: Final = "dependency_unavailable"
# What clients are told to wait before a retry (Retry-After, seconds): heartbeats are renewed
# every second, so a dependency that is back is seen within about that long.
RETRY_AFTER_S: Final = 1


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

"""Which exceptions are outages (503 dependency_unavailable) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import redis.exceptions
import sqlalchemy.exc

from cashmarkets.ops.dependencies import DependencyUnavailable, unavailable


def _caused(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


def test_outages_name_their_dependency() -> None:
    assert unavailable(redis.exceptions.ConnectionError("refused")) == "redis"
    assert unavailable(redis.exceptions.BusyLoadingError("loading")) == "redis"
    assert unavailable(redis.exceptions.TimeoutError()) == "redis"
    assert unavailable(redis.exceptions.ReadOnlyError("READONLY")) == "redis"
    assert unavailable(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("down"))) == "store"
    assert unavailable(sqlalchemy.exc.TimeoutError("pool")) == "store"
    assert unavailable(asyncpg.exceptions.CannotConnectNowError("starting up")) == "store"
    assert unavailable(ConnectionRefusedError(111, "refused")) == "network"
    assert unavailable(DependencyUnavailable("engine")) == "engine"
    # Through a wrapper: the cause chain is followed.
    assert (
        unavailable(_caused(RuntimeError("wrapped"), asyncpg.exceptions.ConnectionDoesNotExistError()))
        == "store"
    )


def test_bugs_and_refusals_are_not_outages() -> None:
    assert unavailable(ValueError("bad")) is None
    assert unavailable(KeyError("x")) is None
    assert unavailable(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup"))) is None
    assert unavailable(redis.exceptions.ResponseError("WRONGTYPE")) is None
    assert unavailable(None) is None

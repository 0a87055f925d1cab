"""Which failures a process waits out (a dependency down) and which end it; the one log line per
outage and the gauge; the backoff's bounds."""

from __future__ import annotations

import asyncpg.exceptions
import pytest
import redis.exceptions
import sqlalchemy.exc

from cashmarkets.log.base import LogCorrupted
from cashmarkets.log.redis_streams import RedisUnavailable
from cashmarkets.ops import metrics
from cashmarkets.ops.backoff import Backoff
from cashmarkets.ops.dependencies import POSTGRES, REDIS, Dependency, DependencyUnavailable, dependency_down


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "default", "expected"),
    [
        (redis.exceptions.ConnectionError("Connection refused"), None, REDIS),
        (redis.exceptions.BusyLoadingError("loading the AOF"), None, REDIS),
        (redis.exceptions.TimeoutError("read timed out"), None, REDIS),
        (RedisUnavailable("cannot reach Redis"), REDIS, REDIS),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), None, POSTGRES),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("gone")), None, POSTGRES),
        (sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection is closed")), None, POSTGRES),
        (_wrapped(RuntimeError("submit failed"), redis.exceptions.ConnectionError("reset")), None, REDIS),
        (ConnectionRefusedError(111, "Connection refused"), POSTGRES, POSTGRES),
        (ConnectionRefusedError(111, "Connection refused"), None, None),  # whose? the caller says
        (TimeoutError(), REDIS, REDIS),
        # Fatal: waiting cannot fix these.
        (LogCorrupted("record 7 has seq 9"), REDIS, None),
        (ValueError("bad setting"), POSTGRES, None),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")), POSTGRES, None),
        (redis.exceptions.ResponseError("WRONGTYPE"), REDIS, None),
    ],
)
def test_dependency_down_tells_outages_from_fatal_errors(
    error: BaseException, default: str | None, expected: str | None
) -> None:
    assert dependency_down(error, default) == expected


def test_an_engine_without_a_heartbeat_is_a_dependency_down() -> None:
    # A scheduler started before the engine's first heartbeat: its claim is refused (503 engine);
    # its lease holder must campaign again, not exit (the chaos test's start-up race).
    refused = DependencyUnavailable("engine", "no engine heartbeat: the command was not logged")
    assert dependency_down(refused) == "engine"
    assert dependency_down(_wrapped(RuntimeError("claim failed"), refused)) == "engine"


def test_a_dependency_logs_and_tells_its_listeners_once_per_outage() -> None:
    dep = Dependency("test-dep")
    heard: list[bool] = []
    dep.listeners.append(heard.append)
    gauge = {"dependency": "test-dep"}
    assert metrics.REGISTRY.get_sample_value("cashmarkets_dependency_up", gauge) == 1
    for _ in range(3):
        dep.down(ConnectionError("refused"), "testing")
    assert metrics.REGISTRY.get_sample_value("cashmarkets_dependency_up", gauge) == 0
    for _ in range(3):
        dep.up()
    dep.down(ConnectionError("refused"), "testing")
    assert heard == [False, True, False]
    assert metrics.REGISTRY.get_sample_value("cashmarkets_dependency_up", gauge) == 0


def test_a_listener_that_fails_does_not_stop_the_others() -> None:
    dep = Dependency("test-dep-2")
    heard: list[bool] = []

    def broken(_up: bool) -> None:
        raise RuntimeError("bug")

    dep.listeners.extend([broken, heard.append])
    dep.down(ConnectionError("refused"), "testing")
    assert heard == [False]


def test_backoff_grows_with_full_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, cap_s=2.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for ceiling in ceilings:
        assert 0 <= backoff.next_delay_s() <= ceiling
    assert backoff.attempts == len(ceilings)
    many = [backoff.next_delay_s() for _ in range(200)]
    assert max(many) <= 2.0 and max(many) > 1.0  # capped, and spread over the window
    backoff.reset()
    assert backoff.next_delay_s() <= 0.1

"""Leases of the "one per deployment" roles (store/leases.py, docs/decisions/018) on SQLite (a
file lock; tokens counted in the table) and PostgreSQL (a row with an expiry on the server's
clock): one holder at a time, tokens that only grow, a holder cut off from the store stops acting
before another takes over, a killed holder is replaced, and `hold` cancels its body at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis.exceptions
from sqlalchemy import select

from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.leases import Lease, LeaseLost, StaleFence, Term, hold
from cashmarkets.store.tables import leases
from tests.support.private_pg import TcpProxy

TTL_S = 1.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> str:
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def url(store: str) -> str:
    await migrate.upgrade(store)
    return store


@pytest.fixture
async def pg(pg_url: str) -> str:
    await migrate.upgrade(pg_url)
    return pg_url


def through(proxy: TcpProxy, url: str) -> str:
    return url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")


async def test_one_holder_at_a_time_and_the_token_grows(url: str) -> None:
    a, b = create_engine(url), create_engine(url)
    try:
        first = await Lease(a, "role", ttl_s=TTL_S).acquire()
        assert first is not None and first.valid()
        other = Lease(b, "role", ttl_s=TTL_S)
        waiting = asyncio.create_task(other.acquire())
        await asyncio.sleep(3 * TTL_S)  # longer than the TTL: the holder renews (PostgreSQL)
        assert not waiting.done() and first.valid()
        # Another role is another lease.
        elsewhere = await asyncio.wait_for(Lease(b, "other-role", ttl_s=TTL_S).acquire(), 5)
        assert elsewhere is not None
        released = time.monotonic()
        await Lease(a, "role", ttl_s=TTL_S).release(first)
        assert not first.valid()
        with pytest.raises(LeaseLost):
            first.check()
        second = await asyncio.wait_for(waiting, 5)
        assert second is not None and second.token == first.token + 1
        assert time.monotonic() - released < TTL_S  # a clean release hands over at once
        await other.release(second)
        async with a.connect() as conn:
            row = (await conn.execute(select(leases).where(leases.c.role == "role"))).one()
        assert row.token == second.token
    finally:
        await a.dispose()
        await b.dispose()


async def test_a_floor_lifts_the_token_and_it_keeps_growing_from_there(url: str) -> None:
    db = create_engine(url)
    lease = Lease(db, "role", ttl_s=TTL_S)

    async def floor() -> int:
        return 41

    try:
        term = await lease.acquire(floor=floor)
        assert term is not None and term.token == 41
        await lease.release(term)
        again = await lease.acquire(floor=floor)
        assert again is not None and again.token == 42
        await lease.release(again)
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_holder_cut_off_from_the_store_stops_before_another_takes_over(pg: str) -> None:
    with TcpProxy(5432) as proxy:
        a, b = create_engine(through(proxy, pg)), create_engine(pg)
        try:
            first = await Lease(a, "role", ttl_s=TTL_S).acquire()
            assert first is not None
            lost_at: list[float] = []

            async def note_loss(term: Term) -> None:
                await term.lost.wait()
                lost_at.append(time.monotonic())

            watch = asyncio.create_task(note_loss(first))
            proxy.cut()
            successor = await asyncio.wait_for(Lease(b, "role", ttl_s=TTL_S).acquire(), 10)
            taken_at = time.monotonic()
            assert successor is not None and successor.token == first.token + 1
            await asyncio.wait_for(watch, 1)
            # The holder had stopped acting before its successor got the lease.
            assert lost_at[0] < taken_at
            assert not first.valid()
            with pytest.raises(LeaseLost):
                first.check()
            proxy.heal()
            # Back in touch, the former holder finds the lease taken: it waits.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(Lease(a, "role", ttl_s=TTL_S).acquire(), 3 * TTL_S)
            assert successor.valid()
        finally:
            await a.dispose()
            await b.dispose()


async def test_a_killed_holder_is_replaced_with_a_higher_token(url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from cashmarkets.store.db import create_engine
        from cashmarkets.store.leases import Lease
        async def main():
            term = await Lease(create_engine({url!r}), "role", ttl_s={TTL_S}).acquire()
            print("HELD", term.token, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    db = create_engine(url)
    try:
        assert holder.stdout is not None
        line = ""
        while not line.startswith("HELD"):
            line = holder.stdout.readline()
            assert line, "the holder exited"
        token = int(line.split()[1])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(Lease(db, "role", ttl_s=TTL_S).acquire(), 2 * TTL_S)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # SQLite: the kernel drops the file lock at once; PostgreSQL: the row expires.
        term = await asyncio.wait_for(Lease(db, "role", ttl_s=TTL_S).acquire(), 3 * TTL_S)
        assert term is not None and term.token == token + 1
    finally:
        holder.kill()
        holder.wait(10)
        await db.dispose()


@pytest.mark.postgres
async def test_hold_cancels_the_body_when_its_term_is_lost_then_holds_again(pg: str) -> None:
    with TcpProxy(5432) as proxy:
        db = create_engine(through(proxy, pg))
        tokens: list[int] = []
        acts: list[tuple[int, float]] = []
        ended: list[tuple[int, float]] = []
        stop = asyncio.Event()

        async def body(term: Term) -> None:
            tokens.append(term.token)
            try:
                while True:
                    term.check()
                    acts.append((term.token, time.monotonic()))
                    if len(tokens) == 2 and len(acts) > 40:
                        raise StaleFence("the resource saw a newer token")  # ends the term
                    await asyncio.sleep(0.02)
            finally:
                ended.append((term.token, time.monotonic()))

        runner = asyncio.create_task(hold(Lease(db, "role", ttl_s=TTL_S), body, stop))
        try:
            while len(acts) < 10:
                await asyncio.sleep(0.05)
            proxy.cut()
            while not ended:
                await asyncio.sleep(0.05)
            # Cancelled by the loss: it never acted past its term's end.
            assert [t for t, _ in ended] == [tokens[0]]
            assert all(at <= ended[0][1] for t, at in acts if t == tokens[0])
            proxy.heal()
            while len(tokens) < 3:  # held again (token 2); StaleFence ends that term; token 3
                assert not runner.done(), runner
                await asyncio.sleep(0.05)
            assert tokens == [tokens[0], tokens[0] + 1, tokens[0] + 2]
            stop.set()
            await asyncio.wait_for(runner, 5)
            assert [t for t, _ in ended] == tokens
        finally:
            stop.set()
            runner.cancel()
            await db.dispose()


async def test_hold_ends_a_term_whose_dependency_is_down_and_campaigns_again(url: str) -> None:
    """A body failing because Redis or PostgreSQL is down (the claim, a command) ends its term,
    not the process: `hold` waits and holds again. Any other error still ends `hold`."""
    db = create_engine(url)
    tokens: list[int] = []

    async def body(term: Term) -> None:
        tokens.append(term.token)
        if len(tokens) == 1:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        if len(tokens) == 2:
            raise ConnectionRefusedError(111, "Connection refused")  # asyncpg, bare
        raise ValueError("a bug: fatal")

    try:
        with pytest.raises(ValueError, match="a bug"):
            await asyncio.wait_for(hold(Lease(db, "role", ttl_s=TTL_S), body), 20)
        assert tokens == [tokens[0], tokens[0] + 1, tokens[0] + 2]
    finally:
        await db.dispose()

"""The store-wide lock that keeps a second projector out, on SQLite (flock) and PostgreSQL
(advisory lock), including its release when the holder dies."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest

from cashmarkets.store.db import create_engine
from cashmarkets.store.locks import exclusive


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))


async def test_a_second_holder_waits_until_the_first_lets_go(url: str) -> None:
    a, b = create_engine(url), create_engine(url)
    order: list[str] = []
    try:
        async with exclusive(a, "projector"):
            order.append("a in")

            async def second() -> None:
                async with exclusive(b, "projector"):
                    order.append("b in")

            waiting = asyncio.create_task(second())
            await asyncio.sleep(0.4)
            assert order == ["a in"]  # still waiting
            order.append("a out")
        await asyncio.wait_for(waiting, 5)
        assert order == ["a in", "a out", "b in"]
        async with exclusive(a, "other-role"), exclusive(b, "projector"):
            pass  # different names do not exclude each other
    finally:
        await a.dispose()
        await b.dispose()


async def test_the_lock_is_released_when_its_holder_is_killed(url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from cashmarkets.store.db import create_engine
        from cashmarkets.store.locks import exclusive
        async def main():
            async with exclusive(create_engine({url!r}), "projector"):
                print("held", flush=True)
                await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        db = create_engine(url)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5), exclusive(db, "projector"):
                    pass
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            async with asyncio.timeout(10), exclusive(db, "projector"):
                pass
        finally:
            await db.dispose()
    finally:
        holder.kill()
        holder.wait(10)

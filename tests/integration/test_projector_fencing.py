"""The projector is a fenced singleton (docs/decisions/018): its token is written on the checkpoint
row in each batch's transaction, so a projector that lost its lease has its late batch refused,
and the rows stay exactly once. Both stores; then a PostgreSQL restart (a private cluster) with
the first projector cut off from it: it stops, a second one takes over with a higher token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cashmarkets.bootstrap import build_projector, build_runtime, store_url
from cashmarkets.core.commands import Deposit, TransferFunds
from cashmarkets.core.results import Accepted
from cashmarkets.ops.settings import Settings
from cashmarkets.projection.projector import NAME_LOCK, Projector
from cashmarkets.runtime.runner import replay
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.leases import Lease, StaleFence, Term
from cashmarkets.store.tables import leases, ledger_transfers, projector_checkpoints
from tests.support.private_pg import PrivatePostgres, TcpProxy, private_postgres
from tests.support.projection_state import actual_state, expected_state

BATCH = 50


async def fill(settings: Settings, first: int, count: int) -> int:
    """`count` deposits and transfers into the journal; the engine's seq after them."""
    runtime = build_runtime(settings)
    await runtime.start()
    try:
        commands: list[Any] = []
        for i in range(first, first + count):
            user = f"u{i % 7}"
            if i % 3:
                commands.append(Deposit(command_id=f"d{i}", owner=user, asset="USDC", amount=1_000 + i))
            else:
                commands.append(
                    TransferFunds(
                        command_id=f"t{i}",
                        from_owner=user,
                        to_owner=f"u{(i + 1) % 7}",
                        asset="USDC",
                        amount=3,
                    )
                )
        results = await asyncio.gather(*(runtime.submit(c) for c in commands))
        assert sum(isinstance(r, Accepted) for r in results) > count // 2
        return int(runtime.engine.seq)
    finally:
        await runtime.stop()


async def rows(db: Any) -> tuple[int, int, int]:
    """(transfer rows, checkpoint seq, checkpoint fence)."""
    async with db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(ledger_transfers))).scalar_one()
        cp = (await conn.execute(select(projector_checkpoints))).one()
    return int(count), int(cp.seq), int(cp.fence)


def settings_for(tmp_path: Path, database_url: str | None, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        projector_batch_records=BATCH,
        snapshot_every_commands=10**9,
        **extra,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("pg_url")) if request.param == "postgres" else None


async def test_a_former_projectors_late_batch_is_refused(tmp_path: Path, database_url: str | None) -> None:
    settings = settings_for(tmp_path, database_url)
    await migrate.upgrade(store_url(settings))
    final = await fill(settings, 0, 600)
    db = create_engine(store_url(settings))
    old: Projector = build_projector(settings, db, None)
    new: Projector = build_projector(settings, db, None)
    await old.log.open()
    await new.log.open()
    try:
        lease = Lease(db, NAME_LOCK, ttl_s=1.0)
        first = await lease.acquire()
        assert first is not None
        old.term = first
        await old.claim(first.token)
        await old.restore()
        assert await old.step() == BATCH
        await lease.release(first)  # lost (here: given up) after one batch
        second = await lease.acquire()
        assert second is not None and second.token == first.token + 1
        new.term = second
        await new.claim(second.token)
        await new.restore()
        assert new.seq == old.seq == BATCH
        assert await new.step() == BATCH
        before = await rows(db)
        assert before[1:] == (2 * BATCH, second.token)
        # The former holder, paused right after its own check (its term still looked valid to it):
        # its next batch overlaps the one the new holder wrote, and is refused whole.
        old.term = Term(NAME_LOCK, first.token, first.holder, float("inf"))
        with pytest.raises(StaleFence):
            await old.step()
        assert await rows(db) == before
        # An unfenced projector (token 0) is refused too, now that the row carries a token.
        old.term = None
        await old.restore()
        with pytest.raises(StaleFence):
            await old.step()
        assert await rows(db) == before
        while new.seq < final:
            await new.step()
        await lease.release(second)
    finally:
        await old.log.close()
        await new.log.close()
        await db.dispose()
    # Every transfer once: what a clean replay of the log produces.
    expected = await expected_state(settings.journal_path)
    actual = await actual_state(store_url(settings))
    assert actual[0] == expected[0] and actual[1] == expected[1]


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.mark.slow
async def test_a_postgres_restart_hands_the_projection_to_a_second_projector(
    tmp_path: Path, pg: PrivatePostgres
) -> None:
    direct = pg.create_database("cm")
    settings = settings_for(tmp_path, direct, lease_ttl_s=1.0)
    await migrate.upgrade(direct)
    first_seq = await fill(settings, 0, 400)
    with TcpProxy(pg.port) as proxy:
        cut_off = create_engine(direct.replace(f":{pg.port}/", f":{proxy.port}/"))
        db = create_engine(direct)
        a: Projector = build_projector(settings, cut_off, None)
        b: Projector = build_projector(settings, db, None)
        await a.log.open()
        await b.log.open()
        terms: dict[str, list[tuple[int, float]]] = {"a": [], "b": []}
        lost: list[float] = []

        def watch(name: str, projector: Projector) -> asyncio.Task[None]:
            async def loop() -> None:
                seen = None
                while True:
                    term = projector.term
                    if term is not None and term is not seen:
                        seen = term
                        terms[name].append((term.token, time.monotonic()))
                        if name == "a":
                            asyncio.get_running_loop().create_task(note_loss(term))
                    await asyncio.sleep(0.005)

            return asyncio.create_task(loop())

        async def note_loss(term: Term) -> None:
            await term.lost.wait()
            lost.append(time.monotonic())

        running_a = asyncio.create_task(a.run())
        running_b: asyncio.Task[None] | None = None
        watchers = [watch("a", a)]
        try:
            deadline = time.monotonic() + 30
            while a.seq < first_seq:
                assert time.monotonic() < deadline and not running_a.done(), running_a
                await asyncio.sleep(0.05)
            running_b = asyncio.create_task(b.run())  # a standby: the lease is held
            watchers.append(watch("b", b))
            await asyncio.sleep(1.5)
            assert b.term is None and terms["b"] == []
            # The database restarts; the first projector stays cut off from it.
            proxy.cut()
            await asyncio.to_thread(pg.restart, 0.5)
            second_seq = await fill(settings, 400, 400)
            while b.seq < second_seq:
                assert time.monotonic() < deadline + 30 and not running_b.done(), running_b
                await asyncio.sleep(0.05)
            (token_a, _), (token_b, took_at) = terms["a"][0], terms["b"][0]
            assert token_b > token_a
            assert lost and lost[0] < took_at  # the first had stopped before the second started
            assert a.term is None and a.seq == first_seq  # it wrote nothing after its loss
            # Back in touch: the first finds the lease taken and waits; nothing it does lands.
            proxy.heal()
            await asyncio.sleep(2.5)
            assert a.term is None and len(terms["a"]) == 1 and not running_a.done()
            assert (await rows(db))[1:] == (second_seq, token_b)
            # A batch the first had in flight (its check passed just before it was cut off) is
            # refused in its transaction.
            late: Projector = build_projector(settings, cut_off, None)
            await late.log.open()
            try:
                late.term = Term(NAME_LOCK, token_a, "a", float("inf"))
                _, late.position = await replay(late.engine, late.log, None, until_seq=first_seq)
                late.committed_seq = first_seq
                before = await rows(db)
                with pytest.raises(StaleFence):
                    await late.step()
                assert await rows(db) == before
            finally:
                await late.log.close()
            async with db.connect() as conn:
                lease = (await conn.execute(select(leases).where(leases.c.role == NAME_LOCK))).one()
            assert lease.token == token_b
        finally:
            tasks = [*watchers, running_a, *([running_b] if running_b is not None else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await a.log.close()
            await b.log.close()
            await cut_off.dispose()
            await db.dispose()
    expected = await expected_state(settings.journal_path)
    actual = await actual_state(direct)
    assert actual[0] == expected[0] and actual[1] == expected[1]

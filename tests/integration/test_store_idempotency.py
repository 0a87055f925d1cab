"""The Idempotency-Key store on SQLite and PostgreSQL: claims, answers, the short renewed lease
that frees a key whose process died (a server killed mid-request), and releases that failed
during a store outage being retried once the store is back."""

from __future__ import annotations

import asyncio
import time

import pytest

from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.idempotency import IdempotencyStore, Stored
from tests.support.private_pg import TcpProxy

ANSWER = Stored(200, "application/json", b"{}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))


async def test_a_dead_claim_is_taken_over_after_its_lease_by_one_retry_only(url: str) -> None:
    await migrate.upgrade(url)
    db = create_engine(url)
    try:
        dead, store = IdempotencyStore(db, lease_s=0.3), IdempotencyStore(db, lease_s=0.3)
        assert await dead.claim("user:1", "k", "h1") == "new"
        # The claimant is "still running": a retry is told so, another body is a mismatch.
        assert await store.claim("user:1", "k", "h1") == "in_progress"
        assert await store.claim("user:1", "k", "h2") == "mismatch"
        dead.abandon()  # its process died: nobody renews, completes or releases
        await asyncio.sleep(0.4)
        takeovers = await asyncio.gather(*(store.claim("user:1", "k", "h1") for _ in range(4)))
        assert sorted(takeovers) == ["in_progress", "in_progress", "in_progress", "new"]
        await store.complete("user:1", "k", ANSWER)
        assert await store.claim("user:1", "k", "h1") == ANSWER
        # An answered key never expires into a takeover (only the 24 h retention ends it).
        await asyncio.sleep(0.4)
        assert await store.claim("user:1", "k", "h1") == ANSWER
    finally:
        await db.dispose()


async def test_a_claim_of_a_live_process_is_renewed_past_its_lease(url: str) -> None:
    await migrate.upgrade(url)
    db = create_engine(url)
    try:
        running, other = IdempotencyStore(db, lease_s=0.3), IdempotencyStore(db, lease_s=0.3)
        assert await running.claim("user:1", "k", "h1") == "new"
        for _ in range(6):  # 1.2 s: four leases, each renewed by the process holding the claim
            await asyncio.sleep(0.2)
            assert await other.claim("user:1", "k", "h1") == "in_progress"
        await running.complete("user:1", "k", ANSWER)
        assert await other.claim("user:1", "k", "h1") == ANSWER
        running.abandon()
    finally:
        await db.dispose()


async def test_a_late_release_never_frees_a_claim_another_request_took_over(url: str) -> None:
    await migrate.upgrade(url)
    db = create_engine(url)
    try:
        slow, other = IdempotencyStore(db, lease_s=0.3), IdempotencyStore(db, lease_s=0.3)
        assert await slow.claim("user:1", "k", "h1") == "new"
        slow._held.clear()  # as if its renewals had failed for a whole lease
        await asyncio.sleep(0.4)
        assert await other.claim("user:1", "k", "h1") == "new"
        await slow.release("user:1", "k")
        assert await slow.claim("user:1", "k", "h1") == "in_progress"
        await other.complete("user:1", "k", ANSWER)
        assert await slow.claim("user:1", "k", "h1") == ANSWER
        other.abandon()
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_release_that_failed_in_an_outage_is_retried_after_it(pg_url: str) -> None:
    await migrate.upgrade(pg_url)
    with TcpProxy(5432) as proxy:
        cut_off = create_engine(pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/"))
        direct = create_engine(pg_url)
        try:
            # A long lease: only the retried release can free the key within this test.
            store, other = IdempotencyStore(cut_off, lease_s=60), IdempotencyStore(direct, lease_s=60)
            assert await store.claim("user:1", "k", "h1") == "new"
            proxy.cut()
            await store.release("user:1", "k")  # fails: queued, never raised
            assert store.unreleased == 1
            assert await other.claim("user:1", "k", "h1") == "in_progress"
            proxy.heal()
            deadline = time.monotonic() + 15
            while store.unreleased and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert store.unreleased == 0
            assert await other.claim("user:1", "k", "h1") == "new"
            await other.close()
            await store.close()
        finally:
            await cut_off.dispose()
            await direct.dispose()

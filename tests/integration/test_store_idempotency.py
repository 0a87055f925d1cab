"""The Idempotency-Key store on SQLite and PostgreSQL: claims, answers, and the lease that frees
a key whose request died without answering (a server killed mid-request)."""

from __future__ import annotations

import asyncio

import pytest

from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.idempotency import IdempotencyStore, Stored


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))


async def test_a_dead_claim_is_taken_over_after_its_lease_by_one_retry_only(url: str) -> None:
    await migrate.upgrade(url)
    db = create_engine(url)
    try:
        store = IdempotencyStore(db, lease_s=0.3)
        assert await store.claim("user:1", "k", "h1") == "new"
        # The claimant is "still running": a retry is told so, another body is a mismatch.
        assert await store.claim("user:1", "k", "h1") == "in_progress"
        assert await store.claim("user:1", "k", "h2") == "mismatch"
        await asyncio.sleep(0.4)  # the claimant died: nobody completes or releases
        takeovers = await asyncio.gather(*(store.claim("user:1", "k", "h1") for _ in range(4)))
        assert sorted(takeovers) == ["in_progress", "in_progress", "in_progress", "new"]
        await store.complete("user:1", "k", Stored(200, "application/json", b"{}"))
        assert await store.claim("user:1", "k", "h1") == Stored(200, "application/json", b"{}")
        # An answered key never expires into a takeover (only the 24 h retention ends it).
        await asyncio.sleep(0.4)
        assert await store.claim("user:1", "k", "h1") == Stored(200, "application/json", b"{}")
    finally:
        await db.dispose()

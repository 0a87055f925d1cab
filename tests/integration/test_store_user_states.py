"""`UserStore`'s live user state on the real PostgreSQL store: what every token use is checked
against. One read per user however many wait for it; changes through the same store seen at once,
through another (another process) within the TTL; sign-outs and status changes in the state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.users import UserStore

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate.upgrade(pg_url)
    engine = create_engine(pg_url)
    yield engine
    await engine.dispose()


def count_user_reads(engine: AsyncEngine) -> list[str]:
    """Every statement that reads the users table, as it is sent."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM users" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_many_waiters_share_one_read_and_a_gone_waiter_does_not_cancel_it(db: AsyncEngine) -> None:
    store = UserStore(db, state_ttl_s=60)
    user = await store.create(email="one@example.com")
    reads = count_user_reads(db)
    impatient = asyncio.create_task(store.state(user.id))
    await asyncio.sleep(0)  # it has started the read
    impatient.cancel()
    states = await asyncio.gather(*(store.state(user.id) for _ in range(50)))
    assert len(reads) == 1
    assert all(
        s is not None and (s.role, s.status, s.token_version) == ("player", "active", 0) for s in states
    )
    assert await store.state(user.id) is states[0] and len(reads) == 1  # then from memory
    assert await store.state("nobody") is None and len(reads) == 2


async def test_a_change_is_seen_here_at_once_and_by_another_store_within_its_ttl(db: AsyncEngine) -> None:
    here, there = UserStore(db, state_ttl_s=0.5), UserStore(db, state_ttl_s=0.5)
    user = await here.create(email="two@example.com")
    assert (await there.state(user.id)).role == "player"  # type: ignore[union-attr]
    assert await here.set_role(user.id, "admin")
    assert (await here.state(user.id)).role == "admin"  # type: ignore[union-attr]
    assert (await there.state(user.id)).role == "player"  # type: ignore[union-attr]  # within its TTL
    await asyncio.sleep(0.55)
    assert (await there.state(user.id)).role == "admin"  # type: ignore[union-attr]


async def test_status_changes_bump_the_version_and_sign_outs_are_listed(db: AsyncEngine) -> None:
    store = UserStore(db, state_ttl_s=60, session_window_s=3600)
    user = await store.create(email="three@example.com")
    kept = await store.issue_refresh(user.id, 3600, family_id="kept")
    gone = await store.issue_refresh(user.id, 3600, family_id="gone")
    await store.revoke_refresh(gone)
    state = await store.state(user.id)
    assert state is not None and state.revoked_sessions == frozenset({"gone"})
    assert await store.set_status(user.id, "disabled")
    state = await store.state(user.id)
    assert state is not None and (state.status, state.token_version) == ("disabled", 1)
    assert await store.set_status(user.id, "disabled")  # no change: the version stays
    assert await store.set_status(user.id, "active")
    state = await store.state(user.id)
    assert state is not None and (state.status, state.token_version) == ("active", 2)
    assert not await store.set_status("nobody", "disabled")
    # A reused refresh token revokes its family: listed too.
    outcome, _, new, family = await store.rotate_refresh(kept, 3600)
    assert (outcome, family) == ("ok", "kept") and new is not None
    assert (await store.rotate_refresh(kept, 3600))[0] == "reused"
    state = await store.state(user.id)
    assert state is not None and state.revoked_sessions == frozenset({"gone", "kept"})
    # Revoked longer ago than the window (the access tokens' lifetime): no longer listed.
    narrow = UserStore(db, session_window_s=0)
    assert (await narrow.state(user.id)).revoked_sessions == frozenset()  # type: ignore[union-attr]

"""Failed password sign-ins lock the account for a growing delay (kept in SQL, so every API
process sees it), refused with 429 before any hashing; and password hashing runs a bounded number
at once with a bounded queue (503 beyond), so a flood of sign-ins cannot starve other requests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from cashmarkets.api import security
from cashmarkets.api.errors import ApiError
from cashmarkets.api.security import PasswordHashing
from cashmarkets.store.signin_throttle import lockout_s
from cashmarkets.store.tables import credentials
from tests.integration.api_helpers import PASSWORD, embedded, services_of, signup
from tests.support.http_client import concurrently

WRONG = "not the password"


async def signin(client: AsyncTestClient[Any], email: str, password: str) -> Any:
    response = await client.post("/api/v1/signin", json={"email": email, "password": password})
    client.cookies.clear()
    return response


async def row(client: AsyncTestClient[Any], user_id: str) -> Any:
    async with services_of(client).db.connect() as conn:
        return (await conn.execute(select(credentials).where(credentials.c.user_id == user_id))).one()


async def unlock_now(client: AsyncTestClient[Any], user_id: str) -> None:
    """Let the lock run out without waiting for it (the count stays)."""
    async with services_of(client).db.begin() as conn:
        stmt = update(credentials).where(credentials.c.user_id == user_id)
        await conn.execute(stmt.values(locked_until_ns=time.time_ns() - 1))


def test_the_delay_grows_from_one_second_and_is_capped() -> None:
    assert [lockout_s(n, 5, 60) for n in range(1, 14)] == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert lockout_s(10**6, 5, 60) == 60
    assert [lockout_s(n, 0, 3) for n in range(3)] == [1, 2, 3]


async def test_failures_lock_the_account_with_a_growing_delay_and_a_success_resets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: any number of wrong passwords, each one an argon2 hash, with no delay.
    async with embedded(tmp_path) as client:
        body = await signup(client, "lock@example.com")
        user_id = body["user"]["id"]
        email = "lock@example.com"
        for _ in range(5):  # CASHMARKETS_SIGNIN_FAILURES_FREE
            assert (await signin(client, email, WRONG)).status_code == 401
        assert (await row(client, user_id)).failed_signins == 5
        hashes: list[int] = []
        real = security._check_password

        def counting(password_hash: str | None, password: str) -> bool:
            hashes.append(1)
            return real(password_hash, password)

        monkeypatch.setattr(security, "_check_password", counting)
        # Locked for 1 s: refused before any hashing, the right password too; another account is not.
        for password in (WRONG, PASSWORD):
            locked = await signin(client, email, password)
            assert locked.status_code == 429, locked.text
            assert locked.json()["code"] == "too_many_failed_signins"
            assert locked.headers["retry-after"] == "1"
            assert "set-cookie" not in locked.headers
        assert hashes == []
        other = await signup(client, "free@example.com")
        assert (await signin(client, "free@example.com", PASSWORD)).status_code == 200
        assert len(hashes) == 1
        # Each further failure doubles the delay, up to CASHMARKETS_SIGNIN_LOCKOUT_MAX_S.
        delays = []
        for _ in range(8):
            await unlock_now(client, user_id)
            assert (await signin(client, email, WRONG)).status_code == 401
            delays.append(int((await signin(client, email, WRONG)).headers["retry-after"]))
        assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
        state = await row(client, user_id)
        assert state.failed_signins == 13
        assert 59 * 10**9 < state.locked_until_ns - time.time_ns() <= 60 * 10**9
        # Once the lock has run out, the right password signs in and resets the count.
        await unlock_now(client, user_id)
        ok = await signin(client, email, PASSWORD)
        assert ok.status_code == 200 and ok.json()["user"]["id"] == user_id
        state = await row(client, user_id)
        assert (state.failed_signins, state.locked_until_ns) == (0, None)
        assert (await row(client, other["user"]["id"])).failed_signins == 0
        # An unknown email is never locked (nothing to lock): 401, as before.
        for _ in range(7):
            assert (await signin(client, "nobody@example.com", WRONG)).status_code == 401


async def test_the_lock_is_shared_by_every_api_process_through_the_store(tmp_path: Path) -> None:
    # Two apps on one store (two API processes): failures on one lock the account on the other.
    async with embedded(tmp_path, signin_failures_free=2) as first:
        await signup(first, "shared@example.com")
        url = str(services_of(first).db.url)
        assert (await signin(first, "shared@example.com", WRONG)).status_code == 401
        assert (await signin(first, "shared@example.com", WRONG)).status_code == 401
        from cashmarkets.store.db import create_engine
        from cashmarkets.store.signin_throttle import SigninThrottle

        other = SigninThrottle(create_engine(url), failures_free=2, lockout_max_s=60)
        try:
            assert 0 < await other.locked_for_s("shared@example.com", time.time_ns()) <= 1
        finally:
            await other.engine.dispose()


async def test_a_flood_of_signins_hashes_one_at_a_time_and_the_overflow_is_503(tmp_path: Path) -> None:
    # Before: every sign-in started its own argon2 thread at once (as many as the thread pool).
    async with embedded(tmp_path, password_hashes_concurrent=1, password_hashes_waiting_max=2) as client:
        answers = await concurrently(
            client, [("/api/v1/signin", {"email": f"n{i}@example.com", "password": WRONG}) for i in range(8)]
        )
        codes = sorted(a.status_code for a in answers)
        assert codes.count(401) >= 1 and codes.count(503) >= 1 and set(codes) <= {401, 503}, codes
        assert codes.count(401) <= 3 + 2  # those that got a turn or a place in the queue (and a few late)
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.json()["code"] == "password_hashing_busy"
        assert busy.headers["retry-after"] == "1"
        # Sign-up hashes through the same gate; once the flood is over it works.
        await signup(client, "after@example.com")


async def test_password_hashing_bounds_threads_and_waiters() -> None:
    gate = PasswordHashing(concurrent=2, waiting_max=1)
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
        return n

    first = [asyncio.create_task(gate._run(work, i)) for i in range(3)]  # two run, one waits
    await asyncio.sleep(0.1)
    assert gate.waiting == 1
    with pytest.raises(ApiError) as busy:
        await gate._run(work, 9)
    assert busy.value.status == 503 and busy.value.code == "password_hashing_busy"
    # A caller that goes away does not free its turn until its thread is done.
    first[0].cancel()
    await asyncio.sleep(0.1)
    assert gate.waiting == 1 and peak == 2
    release.set()
    assert [await t for t in first[1:]] == [1, 2]
    assert peak == 2 and gate.waiting == 0

    # `before` runs with the turn held; if it raises, no hash runs and the turn is free again.
    async def refuse() -> None:
        raise ApiError(429, "too_many_failed_signins")

    with pytest.raises(ApiError):
        await gate.verify(None, "x", before=refuse)
    assert await gate._run(work, 5) == 5

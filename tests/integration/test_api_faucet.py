"""The development faucet's running total per user, asset and UTC day: over it, 429 faucet_limit
(with what is left, in decimal units); the per-request maximum is the daily one; concurrent
requests cannot pass it (one conditional upsert, SQLite and PostgreSQL); a deposit the engine
refuses is given back; the signup demo balance does not count."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.faucet_totals import FaucetTotals, parse_daily_max, utc_day
from tests.integration.api_helpers import admin, bearer, embedded, services_of, signup
from tests.support.http_client import concurrently

LIMITS = "USDC=100,BTC=1,ETH=10"


async def faucet(client: AsyncTestClient[Any], h: dict[str, str], asset: str, amount: str) -> Any:
    return await client.post("/api/v1/faucet", json={"asset": asset, "amount": amount}, headers=h)


async def held(client: AsyncTestClient[Any], user_id: str, asset: str) -> int:
    return await services_of(client).faucet.total(user_id, asset, utc_day(time.time_ns()))


def test_the_setting_is_parsed_strictly() -> None:
    assert parse_daily_max("USDC=10000,BTC=1,ETH=10,SOL=100") == {
        "USDC": 10_000 * 10**6,
        "BTC": 10**8,
        "ETH": 10 * 10**9,
        "SOL": 100 * 10**9,
    }
    assert parse_daily_max(" BTC = 0.5 , ") == {"BTC": 5 * 10**7}
    for bad in ("BTC", "DOGE=1", "BTC=1,BTC=2", "BTC=-1", "BTC=0.000000001", "BTC=1e3", "BTC=99999999999"):
        with pytest.raises(ValueError):
            parse_daily_max(bad)


async def test_a_daily_total_per_user_and_asset(tmp_path: Path) -> None:
    # Before: at most 10,000 of any asset per request (10,000 BTC) and no running total.
    async with embedded(tmp_path, faucet_daily_max=LIMITS) as client:
        body = await signup(client, "f@example.com")
        h, me = bearer(body["token"]), body["user"]["id"]
        assert (await faucet(client, h, "BTC", "0.6")).status_code == 200
        over = await faucet(client, h, "BTC", "0.5")
        assert over.status_code == 429, over.text
        problem = over.json()
        assert problem["code"] == "faucet_limit"
        assert problem["detail"] == (
            "the faucet gives at most 1.00000000 BTC per user per day (UTC); 0.40000000 BTC left today"
        )
        assert (problem["dailyMax"], problem["remaining"]) == ("1.00000000", "0.40000000")
        assert 0 < int(over.headers["retry-after"]) <= 86_400
        assert (await faucet(client, h, "BTC", "0.4")).status_code == 200
        assert (await faucet(client, h, "BTC", "0.00000001")).status_code == 429
        assert await held(client, me, "BTC") == 10**8
        # More than the daily maximum in one request can never succeed: 400, as before.
        too_big = await faucet(client, h, "ETH", "10.000000001")
        assert too_big.status_code == 400 and too_big.json()["code"] == "invalid_amount"
        assert too_big.json()["detail"] == "at most 10.000000000 ETH per request and per day"
        # An asset not in the setting is not given.
        none = await faucet(client, h, "SOL", "1")
        assert none.status_code == 400 and none.json()["detail"] == "the faucet gives no SOL"
        # The signup's demo balance (5,000 USDC) is not counted; the USDC total is its own.
        assert (await faucet(client, h, "USDC", "100")).status_code == 200
        assert (await faucet(client, h, "USDC", "1")).status_code == 429
        balances = (await client.get("/api/v1/balance", headers=h)).json()["balances"]
        assert {b["asset"]: b["balance"] for b in balances} == {"USDC": "5100.000000", "BTC": "1.00000000"}
        # Another user has totals of their own.
        other = bearer((await signup(client, "g@example.com"))["token"])
        assert (await faucet(client, other, "BTC", "1")).status_code == 200


async def test_concurrent_requests_cannot_pass_the_daily_total(tmp_path: Path) -> None:
    async with embedded(tmp_path, faucet_daily_max=LIMITS) as client:
        body = await signup(client, "c@example.com")
        answers = await concurrently(
            client,
            [("/api/v1/faucet", {"asset": "BTC", "amount": "0.3"}) for _ in range(12)],
            headers=bearer(body["token"]),
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * 3 + [429] * 9, codes
        balances = (await client.get("/api/v1/balance", headers=bearer(body["token"]))).json()["balances"]
        assert {b["asset"]: b["balance"] for b in balances}["BTC"] == "0.90000000"
        assert await held(client, body["user"]["id"], "BTC") == 9 * 10**7


async def test_the_conditional_upsert_holds_under_concurrency_on_sqlite(sqlite_url: str) -> None:
    await check_conditional_upsert(sqlite_url)


async def test_the_conditional_upsert_holds_under_concurrency_on_postgresql(pg_url: str) -> None:
    await check_conditional_upsert(pg_url)


async def check_conditional_upsert(url: str) -> None:
    await migrate.upgrade(url)
    engine = create_engine(url)
    try:
        totals = FaucetTotals(engine, {"BTC": 100})
        won = await asyncio.gather(*(totals.reserve("u", "BTC", 7, 3, 100) for _ in range(50)))
        assert won.count(True) == 33 and await totals.total("u", "BTC", 7) == 99
        assert not await totals.reserve("u", "BTC", 7, 2, 100)
        assert await totals.reserve("u", "BTC", 8, 100, 100)  # another day
        assert await totals.reserve("v", "BTC", 7, 100, 100)  # another user
        await totals.refund("u", "BTC", 7, 3)
        assert await totals.reserve("u", "BTC", 7, 4, 100) and await totals.total("u", "BTC", 7) == 100
    finally:
        await engine.dispose()


async def test_a_refused_deposit_is_given_back_and_a_late_one_still_counts(tmp_path: Path) -> None:
    async with embedded(tmp_path, faucet_daily_max="BTC=40000000000") as client:
        boss = await admin(client)
        body = await signup(client, "r@example.com")
        h, me = bearer(body["token"]), body["user"]["id"]
        # 60e9 BTC already there: 40e9 more would pass the ledger's 2**63 - 1: the engine refuses.
        funded = await client.post(
            "/api/v1/admin/deposits",
            json={"userId": me, "asset": "BTC", "amount": "60000000000"},
            headers=boss,
        )
        assert funded.status_code == 200, funded.text
        refused = await faucet(client, h, "BTC", "40000000000")
        assert refused.status_code == 422 and refused.json()["code"] == "overflow"
        assert await held(client, me, "BTC") == 0
        # After a 504 the deposit may still be applied: it stays counted.
        settings = services_of(client).settings
        settings.command_timeout_s = 0.000001
        late = await faucet(client, h, "BTC", "1")
        settings.command_timeout_s = 5.0
        assert late.status_code == 504
        assert await held(client, me, "BTC") == 10**8

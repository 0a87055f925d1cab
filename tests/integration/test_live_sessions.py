"""Every authenticated HTTP request sees the user's live role, status and revoked sign-ins, not
only what its token said when issued (issue 15, item 2), on an embedded server with its real
SQLite store: a demoted admin, a disabled user (also through an API key) and a signed-out sign-in
lose access at once; a change made by another process (the CLI) within a second."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from litestar.testing import AsyncTestClient
from sqlalchemy import select

from cashmarkets.core.products.leverage import PriceTick
from cashmarkets.core.results import Accepted
from cashmarkets.store.tables import audit_log
from tests.integration.api_helpers import (
    PASSWORD,
    admin,
    bearer,
    embedded,
    on_app_loop,
    services_of,
    signup,
    wait_committed,
)


async def me_status(client: AsyncTestClient[Any], token: str) -> int:
    return (await client.get("/api/v1/me", headers=bearer(token))).status_code


async def signin(client: AsyncTestClient[Any], email: str) -> Any:
    response = await client.post("/api/v1/signin", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    return response


async def tick(client: AsyncTestClient[Any], symbol: str, bid: int, ask: int) -> None:
    runtime = services_of(client).runtime
    cmd = PriceTick(command_id=f"tick-{symbol}-{runtime.engine.seq}", symbol=symbol, bid=bid, ask=ask)
    assert isinstance(await on_app_loop(client, runtime.submit(cmd)), Accepted)


async def usdc_available(client: AsyncTestClient[Any], user_id: str) -> int:
    """The user's USDC not held (by withdrawals, positions' margin), in minor units."""
    accounts = await on_app_loop(client, services_of(client).balances.accounts_of(user_id))
    return int(next(a.available for a in accounts if a.asset == "USDC"))


async def test_a_demoted_admins_old_token_is_403_on_admin_routes_at_once(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        player = await signup(client, "p@example.com")
        uid = player["user"]["id"]
        boss = await admin(client, "boss@example.com")
        other = await admin(client, "other@example.com")
        boss_id = (await client.get("/api/v1/me", headers=boss)).json()["id"]
        deposit = {"userId": uid, "asset": "USDC", "amount": "1"}
        assert (await client.post("/api/v1/admin/deposits", json=deposit, headers=boss)).status_code == 200
        demoted = await client.post(
            f"/api/v1/admin/users/{boss_id}/role", json={"role": "player"}, headers=other
        )
        assert demoted.status_code == 200 and demoted.json()["role"] == "player"
        # The very next request with the token issued as admin: the role it carries no longer counts.
        again = await client.post(
            "/api/v1/admin/deposits", json={**deposit, "amount": "1000000"}, headers=boss
        )
        assert again.status_code == 403 and again.json()["code"] == "forbidden"
        assert (await client.get("/api/v1/admin/withdrawals", headers=boss)).status_code == 403
        me = await client.get("/api/v1/me", headers=boss)  # still signed in, as what they are now
        assert me.status_code == 200 and me.json()["role"] == "player"
        assert await usdc_available(client, uid) == 5_001_000_000  # the demo 5000 and the first 1 only
        # The other way round: a player made admin uses the token they already hold.
        player_h = bearer(player["token"])
        assert (await client.get("/api/v1/admin/withdrawals", headers=player_h)).status_code == 403
        promoted = await client.post(f"/api/v1/admin/users/{uid}/role", json={"role": "admin"}, headers=other)
        assert promoted.status_code == 200
        assert (await client.get("/api/v1/admin/withdrawals", headers=player_h)).status_code == 200


async def test_a_disabled_users_tokens_are_refused_and_stay_refused_after_enabling(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        user = await signup(client, "u@example.com")
        uid, h = user["user"]["id"], bearer(user["token"])
        boss = await admin(client)
        await tick(client, "BTC", 6_500_000, 6_500_100)
        withdraw = {"asset": "USDC", "amount": "10", "destination": "x"}
        assert (await client.post("/api/v1/withdrawals", json=withdraw, headers=h)).status_code == 202
        disabled = await client.post(
            f"/api/v1/admin/users/{uid}/status", json={"status": "disabled"}, headers=boss
        )
        assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
        refused: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/api/v1/withdrawals", withdraw),
            (
                "POST",
                "/api/v1/trade/create",
                {"asset": "BTC", "type": "long", "margin": 10_000, "leverage": 2},
            ),
            (
                "POST",
                "/api/v1/spot/orders",
                {"market": "BTC_USDC", "side": "BUY", "price": "1", "quantity": "1"},
            ),
            ("POST", "/api/v1/faucet", {"asset": "USDC", "amount": "1"}),
            ("GET", "/api/v1/balance", None),
            ("GET", "/api/v1/me", None),
        ]
        for method, path, payload in refused:
            response = await client.request(method, path, json=payload, headers=h)
            assert response.status_code == 401, (path, response.text)
        # No new tokens either.
        again = await signin(client, "u@example.com")
        assert again.status_code == 403 and again.json()["code"] == "account_disabled"
        refresh = await client.post("/api/v1/token/refresh", json={"refreshToken": user["refreshToken"]})
        assert refresh.status_code == 403
        assert await usdc_available(client, uid) == 4_990_000_000  # only the first withdrawal's hold ...
        await wait_committed(client)
        listed = (await client.get("/api/v1/admin/withdrawals", headers=boss)).json()["items"]
        assert [w["amount"] for w in listed] == ["10.000000"]  # ... and only one withdrawal
        # Enabled again: the tokens from before stay refused; a new sign-in works.
        enabled = await client.post(
            f"/api/v1/admin/users/{uid}/status", json={"status": "active"}, headers=boss
        )
        assert enabled.status_code == 200 and enabled.json()["status"] == "active"
        assert await me_status(client, user["token"]) == 401
        fresh = await signin(client, "u@example.com")
        assert fresh.status_code == 200 and await me_status(client, fresh.json()["token"]) == 200
        missing = await client.post(
            "/api/v1/admin/users/nobody/status", json={"status": "disabled"}, headers=boss
        )
        assert missing.status_code == 404
        async with services_of(client).db.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_log.c.action, audit_log.c.detail).where(audit_log.c.target == uid)
                )
            ).all()
        statuses = [json.loads(r.detail)["status"] for r in rows if r.action == "set_status"]
        assert statuses == ["disabled", "active"]


async def test_a_user_disabled_from_the_cli_is_refused_within_a_second(tmp_path: Path) -> None:
    """Another process (the CLI) changes the store: this process's cache holds at most 1 s."""
    async with embedded(tmp_path) as client:
        user = await signup(client, "cli@example.com")
        assert await me_status(client, user["token"]) == 200  # the user's state is now cached
        cli = [sys.executable, "-m", "cashmarkets.cli", "users", "set-status"]
        data_dir = ["--data-dir", str(tmp_path / "data")]

        async def run(*args: str) -> tuple[int, bytes]:
            proc = await asyncio.create_subprocess_exec(
                *cli, *args, *data_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out or err

        assert (await run("cli@example.com", "frozen"))[0] == 2
        assert (await run("nobody@example.com", "disabled"))[0] == 1
        code, out = await run("CLI@example.com", "disabled")
        assert code == 0 and json.loads(out)["status"] == "disabled"
        done = time.monotonic()
        while await me_status(client, user["token"]) == 200:
            assert time.monotonic() - done < 1.5, "still accepted more than a second after the change"
            await asyncio.sleep(0.05)
        assert (await signin(client, "cli@example.com")).status_code == 403


async def test_sign_out_revokes_that_sign_ins_access_tokens(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        first = await signup(client, "s@example.com")
        second_response = await signin(client, "s@example.com")
        second = second_response.json()
        assert (
            await me_status(client, first["token"]) == 200 and await me_status(client, second["token"]) == 200
        )
        out = await client.post("/api/v1/signout", json={"refreshToken": first["refreshToken"]})
        client.cookies.clear()
        assert out.status_code == 200
        assert await me_status(client, first["token"]) == 401
        assert (await client.get("/api/v1/balance", headers=bearer(first["token"]))).status_code == 401
        assert await me_status(client, second["token"]) == 200  # another sign-in is untouched
        # A refresh token used twice revokes its sign-in: the access tokens issued with it too.
        rotated = await client.post("/api/v1/token/refresh", json={"refreshToken": second["refreshToken"]})
        client.cookies.clear()
        assert rotated.status_code == 200 and await me_status(client, rotated.json()["token"]) == 200
        reused = await client.post("/api/v1/token/refresh", json={"refreshToken": second["refreshToken"]})
        assert reused.status_code == 401 and reused.json()["code"] == "refresh_reused"
        assert await me_status(client, rotated.json()["token"]) == 401
        assert await me_status(client, second["token"]) == 401


async def test_a_disabled_users_api_key_is_refused(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        user = await signup(client, "bot@example.com")
        boss = await admin(client)
        created = await client.post("/api/v1/apikeys", json={"label": "bot"}, headers=bearer(user["token"]))
        key, secret = created.json()["apiKey"], created.json()["secret"]

        def signed() -> str:
            query = urlencode({"timestamp": time.time_ns() // 1_000_000})
            return (
                query + "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
            )

        account = await client.get("/api/v3/account?" + signed(), headers={"X-MBX-APIKEY": key})
        assert account.status_code == 200
        disabled = await client.post(
            f"/api/v1/admin/users/{user['user']['id']}/status", json={"status": "disabled"}, headers=boss
        )
        assert disabled.status_code == 200
        refused = await client.get("/api/v3/account?" + signed(), headers={"X-MBX-APIKEY": key})
        assert refused.status_code == 401 and refused.json()["code"] == -2015

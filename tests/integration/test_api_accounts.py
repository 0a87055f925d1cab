"""The platform API in embedded mode, in process: signup, balances, faucet, ledger history,
withdrawals, admin, command outcomes, errors. Real SQLite journal and store underneath."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from cashmarkets.ops.settings import Settings
from tests.integration.api_helpers import (
    PASSWORD,
    admin,
    bearer,
    embedded,
    services_of,
    signup,
    wait_projected,
)
from tests.support.ports import free_port


async def test_signup_credits_the_demo_balance_and_balance_reads_it(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "alice@example.com")
        assert body["user"]["email"] == "alice@example.com" and body["user"]["role"] == "player"
        assert body["token"] and body["refreshToken"]
        balance = await client.get("/api/v1/balance", headers=bearer(body["token"]))
        assert balance.status_code == 200
        assert balance.json() == {
            "balances": [
                {
                    "asset": "USDC",
                    "decimals": 6,
                    "balance": "5000.000000",
                    "available": "5000.000000",
                    "held": "0.000000",
                }
            ]
        }


async def test_duplicate_email_is_409_and_bad_input_is_400_with_fields(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        await signup(client, "bob@example.com")
        again = await client.post("/api/v1/signup", json={"email": "BOB@example.com", "password": PASSWORD})
        assert again.status_code == 409 and again.json()["code"] == "email_taken"
        short = await client.post("/api/v1/signup", json={"email": "c@example.com", "password": "short"})
        assert short.status_code == 400
        assert short.headers["content-type"] == "application/problem+json"
        assert short.json()["code"] == "validation_failed"
        assert short.json()["errors"][0]["field"] == "password"
        for bad in (b"{not json", b"[]", b'{"email": 5, "password": "xxxxxxxxxx"}'):
            response = await client.post(
                "/api/v1/signup", content=bad, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, bad
            assert response.json()["requestId"] == response.headers["x-request-id"]
        extra = await client.post(
            "/api/v1/signup", json={"email": "d@example.com", "password": PASSWORD, "x": 1}
        )
        assert extra.status_code == 400 and "unknown field" in extra.text


async def test_faucet_credits_and_validates(tmp_path: Path) -> None:
    # The default daily maximum (10,000 USDC) is also the most per request.
    async with embedded(tmp_path, faucet_daily_max=Settings().faucet_daily_max) as client:
        h = bearer((await signup(client, "f@example.com"))["token"])
        ok = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "12.5"}, headers=h)
        assert ok.status_code == 200
        assert ok.json()["balance"] == {"asset": "USDC", "balance": "5012.500000", "available": "5012.500000"}
        btc = await client.post("/api/v1/faucet", json={"asset": "BTC", "amount": "0.00000001"}, headers=h)
        assert btc.status_code == 200 and btc.json()["balance"]["balance"] == "0.00000001"
        cases = [
            ({"asset": "USDC", "amount": "1e3"}, 400, "invalid_amount"),
            ({"asset": "USDC", "amount": "-1"}, 400, "invalid_amount"),
            ({"asset": "USDC", "amount": "0"}, 400, "invalid_amount"),
            ({"asset": "USDC", "amount": "0.0000001"}, 400, "invalid_amount"),
            ({"asset": "USDC", "amount": "10000.000001"}, 400, "invalid_amount"),
            ({"asset": "DOGE", "amount": "1"}, 400, "unknown_asset"),
            ({"asset": "USDC", "amount": 5}, 400, "validation_failed"),
        ]
        for payload, status, code in cases:
            response = await client.post("/api/v1/faucet", json=payload, headers=h)
            assert (response.status_code, response.json()["code"]) == (status, code), payload
        unauthenticated = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"})
        assert unauthenticated.status_code == 401


async def test_faucet_is_off_when_configured_off(tmp_path: Path) -> None:
    async with embedded(tmp_path, faucet=False) as client:
        body = await signup(client, "nofaucet@example.com")
        balance = await client.get("/api/v1/balance", headers=bearer(body["token"]))
        assert balance.json() == {"balances": []}
        response = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(body["token"])
        )
        assert response.status_code == 403 and response.json()["code"] == "faucet_disabled"


async def test_ledger_history_pages_newest_first_and_only_shows_my_transfers(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "l@example.com"))["token"])
        other = bearer((await signup(client, "other@example.com"))["token"])
        for i in range(1, 8):
            await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": str(i)}, headers=h)
        await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "99"}, headers=other)
        await wait_projected(client)
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/ledger", params=params, headers=h)).json()
            seen.extend(page["items"])
            cursor = page["nextCursor"]
            if cursor is None:
                break
        amounts = [item["amount"] for item in seen]
        assert amounts == [f"{i}.000000" for i in range(7, 0, -1)] + ["5000.000000"]
        assert [item["id"] for item in seen] == sorted((item["id"] for item in seen), reverse=True)
        filtered = (
            await client.get("/api/v1/ledger", params={"code": "faucet", "asset": "BTC"}, headers=h)
        ).json()
        assert filtered == {"items": [], "nextCursor": None}
        bad = await client.get("/api/v1/ledger", params={"cursor": "!!"}, headers=h)
        assert bad.status_code == 400 and bad.json()["code"] == "bad_cursor"
        too_many = await client.get("/api/v1/ledger", params={"limit": 1000}, headers=h)
        assert too_many.status_code == 400


async def test_withdrawal_holds_then_admin_completes_or_rejects(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "w@example.com"))["token"])
        boss = await admin(client)
        first = await client.post(
            "/api/v1/withdrawals", json={"asset": "USDC", "amount": "100", "destination": "0xabc"}, headers=h
        )
        second = await client.post(
            "/api/v1/withdrawals", json={"asset": "USDC", "amount": "50", "destination": "0xdef"}, headers=h
        )
        assert first.status_code == second.status_code == 202
        assert first.json()["status"] == "pending"
        balance = (await client.get("/api/v1/balance", headers=h)).json()["balances"][0]
        assert (balance["balance"], balance["available"], balance["held"]) == (
            "5000.000000",
            "4850.000000",
            "150.000000",
        )
        # Players may not decide withdrawals.
        forbidden = await client.post(
            f"/api/v1/admin/withdrawals/{first.json()['id']}/complete", json={}, headers=h
        )
        assert forbidden.status_code == 403
        await wait_projected(client)
        done = await client.post(
            f"/api/v1/admin/withdrawals/{first.json()['id']}/complete",
            json={"reference": "tx-1"},
            headers=boss,
        )
        assert (
            done.status_code == 200
            and done.json()["status"] == "completed"
            and done.json()["reference"] == "tx-1"
        )
        rejected = await client.post(
            f"/api/v1/admin/withdrawals/{second.json()['id']}/reject", json={"reference": "kyc"}, headers=boss
        )
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        again = await client.post(
            f"/api/v1/admin/withdrawals/{first.json()['id']}/reject", json={}, headers=boss
        )
        assert again.status_code == 404 and again.json()["code"] == "withdrawal_not_found"
        balance = (await client.get("/api/v1/balance", headers=h)).json()["balances"][0]
        assert (balance["balance"], balance["available"], balance["held"]) == (
            "4900.000000",
            "4900.000000",
            "0.000000",
        )
        await wait_projected(client)
        mine = (await client.get("/api/v1/withdrawals", headers=h)).json()["items"]
        assert [(w["amount"], w["status"]) for w in mine] == [
            ("50.000000", "rejected"),
            ("100.000000", "completed"),
        ]
        too_much = await client.post(
            "/api/v1/withdrawals", json={"asset": "USDC", "amount": "999999", "destination": "x"}, headers=h
        )
        assert too_much.status_code == 422 and too_much.json()["code"] == "insufficient_funds"


async def test_admin_deposit_and_role_change_are_admin_only(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        player = await signup(client, "p@example.com")
        boss = await admin(client)
        h = bearer(player["token"])
        payload = {"userId": player["user"]["id"], "asset": "BTC", "amount": "0.5"}
        assert (await client.post("/api/v1/admin/deposits", json=payload, headers=h)).status_code == 403
        assert (await client.post("/api/v1/admin/deposits", json=payload)).status_code == 401
        done = await client.post("/api/v1/admin/deposits", json=payload, headers=boss)
        assert done.status_code == 200
        btc = [
            b
            for b in (await client.get("/api/v1/balance", headers=h)).json()["balances"]
            if b["asset"] == "BTC"
        ]
        assert btc[0]["balance"] == "0.50000000"
        missing = await client.post(
            "/api/v1/admin/deposits", json={**payload, "userId": "nobody"}, headers=boss
        )
        assert missing.status_code == 404
        role = await client.post(
            f"/api/v1/admin/users/{player['user']['id']}/role", json={"role": "auditor"}, headers=boss
        )
        assert role.status_code == 200 and role.json()["role"] == "auditor"
        bad_role = await client.post(
            f"/api/v1/admin/users/{player['user']['id']}/role", json={"role": "god"}, headers=boss
        )
        assert bad_role.status_code == 400


async def test_command_outcome_by_idempotency_key(tmp_path: Path) -> None:
    # That another user's key is 404 is checked in test_api_security.py.
    async with embedded(tmp_path) as client:
        alice = bearer((await signup(client, "a@example.com"))["token"])
        sent = await client.post(
            "/api/v1/faucet",
            json={"asset": "USDC", "amount": "1"},
            headers={**alice, "Idempotency-Key": "k-1"},
        )
        assert sent.status_code == 200
        outcome = await client.get("/api/v1/commands/k-1", params={"route": "/api/v1/faucet"}, headers=alice)
        assert outcome.status_code == 200
        assert outcome.json() == {"commandId": "k-1", "status": "accepted", "seq": sent.json()["seq"]}


async def test_errors_are_problem_json_everywhere(tmp_path: Path) -> None:
    async with embedded(tmp_path, request_body_max_bytes=1024) as client:
        for method, path in (("GET", "/nope"), ("DELETE", "/api/v1/balance"), ("GET", "/api/v1/balance")):
            response = await client.request(method, path)
            assert response.headers["content-type"] == "application/problem+json", path
            assert response.json()["status"] == response.status_code
            assert response.json()["requestId"]
        big = await client.post(
            "/api/v1/signup", content=b"{" + b" " * 4096 + b"}", headers={"content-type": "application/json"}
        )
        assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
        traced = await client.get("/nope", headers={"X-Request-Id": "trace-123"})
        assert traced.json()["requestId"] in ("trace-123", traced.headers["x-request-id"])


async def test_health_ready_metrics_and_openapi(tmp_path: Path) -> None:
    port = free_port()
    async with embedded(tmp_path, metrics_port=port, metrics_token="scrape-secret") as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": "ok", "engine": "ok", "projector": "ok"}
        assert ready.json()["ready"] is True and ready.json()["projectionLagMs"] == 0
        await signup(client, "m@example.com")
        signed_up = (
            "cashmarkets_http_request_duration_seconds_count"
            '{method="POST",route="/api/v1/signup",status="201"}'
        )
        # The metrics port serves them to anyone who can reach it (bind it to a private address).
        async with httpx.AsyncClient(trust_env=False) as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200 and signed_up in scraped.text
        # The public port: only with the metrics token; otherwise 404, as an unknown path.
        # (Before: /metrics on the public port was open to everyone.)
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            bearer((await signup(client, "n@x.com"))["token"]),
        ):
            hidden = await client.get("/metrics", headers=headers)
            assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
            assert "cashmarkets_" not in hidden.text
        metrics = (await client.get("/metrics", headers=bearer("scrape-secret"))).text
        assert signed_up in metrics
        schema = (await client.get("/openapi.json")).json()
        assert schema["openapi"].startswith("3.") and "/api/v1/balance" in schema["paths"]
        docs = await client.get("/docs", follow_redirects=True)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_concurrent_signups_all_get_their_balance(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        bodies = await asyncio.gather(*(signup(client, f"u{i}@example.com") for i in range(10)))
        for body in bodies:
            balances = (await client.get("/api/v1/balance", headers=bearer(body["token"]))).json()["balances"]
            assert balances[0]["balance"] == "5000.000000"


async def test_a_slow_engine_answers_504_and_the_outcome_is_found_later(tmp_path: Path) -> None:
    # A timeout shorter than one fsync: the answer cannot arrive in time, the command still applies.
    async with embedded(tmp_path, command_timeout_s=0.000001) as client:
        services_of(client).settings.command_timeout_s = 5.0
        body = await signup(client, "slow@example.com")
        h = bearer(body["token"])
        services_of(client).settings.command_timeout_s = 0.000001
        response = await client.post(
            "/api/v1/faucet",
            json={"asset": "USDC", "amount": "3"},
            headers={**h, "Idempotency-Key": "slow-1"},
        )
        assert response.status_code == 504 and response.json()["code"] == "timeout"
        assert response.json()["commandId"].endswith(":slow-1")
        services_of(client).settings.command_timeout_s = 5.0
        for _ in range(100):
            outcome = await client.get(
                "/api/v1/commands/slow-1", params={"route": "/api/v1/faucet"}, headers=h
            )
            if outcome.status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert outcome.json()["status"] == "accepted"
        # The retry with the same key takes effect once: the balance moved by 3, not 6.
        retry = await client.post(
            "/api/v1/faucet",
            json={"asset": "USDC", "amount": "3"},
            headers={**h, "Idempotency-Key": "slow-1"},
        )
        assert retry.status_code == 200 and retry.json()["balance"]["balance"] == "5003.000000"

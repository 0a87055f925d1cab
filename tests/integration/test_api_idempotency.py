"""`Idempotency-Key` on the embedded API (POST and DELETE): replays are byte-identical and move
the ledger once, a key reused for another request is a 409, keys are per user, concurrent repeats
apply once, answered 4xx are replayed too, malformed keys are refused, and sign-in answers (tokens)
are never stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.api_helpers import bearer, embedded, services_of, signup, wait_committed


async def usdc(client: AsyncTestClient[Any], headers: dict[str, str]) -> str:
    balances = (await client.get("/api/v1/balance", headers=headers)).json()["balances"]
    found: str = next(b["balance"] for b in balances if b["asset"] == "USDC")
    return found


async def test_same_key_and_body_replays_the_first_response_byte_for_byte(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "i@example.com"))["token"])
        keyed = {**h, "Idempotency-Key": "pay-1"}
        payload = {"asset": "USDC", "amount": "25"}
        first = await client.post("/api/v1/faucet", json=payload, headers=keyed)
        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        assert first.json()["balance"]["balance"] == "5025.000000"
        second = await client.post("/api/v1/faucet", json=payload, headers=keyed)
        assert second.status_code == 200
        assert second.content == first.content
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["content-type"] == first.headers["content-type"]
        # A replay is still a request of its own.
        assert second.headers["x-request-id"] != first.headers["x-request-id"]
        assert await usdc(client, h) == "5025.000000"
        # The same body without a key is a new request.
        third = await client.post("/api/v1/faucet", json=payload, headers=h)
        assert third.status_code == 200 and third.json()["balance"]["balance"] == "5050.000000"
        await wait_committed(client)
        faucet = (await client.get("/api/v1/ledger", params={"code": "faucet"}, headers=h)).json()["items"]
        assert [item["amount"] for item in faucet] == ["25.000000", "25.000000", "5000.000000"]
        # Withdrawals too: one hold, however many replays.
        wkeyed = {**h, "Idempotency-Key": "w-1"}
        body = {"asset": "USDC", "amount": "10", "destination": "0xabc"}
        answers = [await client.post("/api/v1/withdrawals", json=body, headers=wkeyed) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 202]
        assert len({a.content for a in answers}) == 1
        balance = (await client.get("/api/v1/balance", headers=h)).json()["balances"][0]
        assert balance["held"] == "10.000000"


async def test_same_key_with_another_body_is_409_and_keys_are_per_user(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = bearer((await signup(client, "alice@example.com"))["token"])
        bob = bearer((await signup(client, "bob@example.com"))["token"])
        key = {"Idempotency-Key": "shared-key"}
        first = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**alice, **key}
        )
        assert first.status_code == 200
        other_body = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "2"}, headers={**alice, **key}
        )
        assert other_body.status_code == 409
        assert other_body.headers["content-type"] == "application/problem+json"
        assert other_body.json()["code"] == "idempotency_key_reused"
        other_route = await client.post(
            "/api/v1/withdrawals",
            json={"asset": "USDC", "amount": "1", "destination": "x"},
            headers={**alice, **key},
        )
        assert other_route.status_code == 409 and other_route.json()["code"] == "idempotency_key_reused"
        assert await usdc(client, alice) == "5001.000000"
        # Bob's key of the same name is his own: it runs, with his body, on his account.
        theirs = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "2"}, headers={**bob, **key}
        )
        assert theirs.status_code == 200 and "idempotent-replayed" not in theirs.headers
        assert theirs.json()["balance"]["balance"] == "5002.000000"
        assert await usdc(client, bob) == "5002.000000"
        assert await usdc(client, alice) == "5001.000000"
        # And replays for each are their own.
        replay = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "2"}, headers={**bob, **key}
        )
        assert replay.headers["idempotent-replayed"] == "true" and replay.content == theirs.content


async def test_concurrent_requests_with_one_key_apply_once(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "c@example.com"))["token"])
        keyed = {**h, "Idempotency-Key": "burst-1"}
        payload = {"asset": "USDC", "amount": "7"}
        responses = await asyncio.gather(
            *(client.post("/api/v1/faucet", json=payload, headers=keyed) for _ in range(20))
        )
        outcomes = []
        for response in responses:
            if response.status_code == 409:
                assert response.json()["code"] == "idempotency_key_in_use", response.text
            else:
                assert response.status_code == 200, response.text
                assert response.json()["balance"]["balance"] == "5007.000000"
            outcomes.append(response.status_code)
        assert 200 in outcomes
        ok_bodies = {r.content for r in responses if r.status_code == 200}
        assert len(ok_bodies) == 1
        assert await usdc(client, h) == "5007.000000"
        # Once the first is done, a retry gets the stored answer.
        late = await client.post("/api/v1/faucet", json=payload, headers=keyed)
        assert late.status_code == 200 and late.headers["idempotent-replayed"] == "true"
        assert late.content in ok_bodies
        await wait_committed(client)
        faucet = (await client.get("/api/v1/ledger", params={"code": "faucet"}, headers=h)).json()["items"]
        assert [item["amount"] for item in faucet] == ["7.000000", "5000.000000"]


async def test_an_answered_4xx_is_replayed_and_bad_keys_are_400(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "e@example.com"))["token"])
        keyed = {**h, "Idempotency-Key": "bad-amount"}
        first = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "-1"}, headers=keyed)
        assert first.status_code == 400 and first.json()["code"] == "invalid_amount"
        again = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "-1"}, headers=keyed)
        assert again.status_code == 400
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        # A rejection by the engine (422) is kept as well.
        wkeyed = {**h, "Idempotency-Key": "too-much"}
        body = {"asset": "USDC", "amount": "999999", "destination": "x"}
        refused = await client.post("/api/v1/withdrawals", json=body, headers=wkeyed)
        assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
        await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "10000"}, headers=h)
        retried = await client.post("/api/v1/withdrawals", json=body, headers=wkeyed)
        assert retried.status_code == 422 and retried.content == refused.content
        assert (await client.get("/api/v1/balance", headers=h)).json()["balances"][0]["held"] == "0.000000"

        too_long = await client.post(
            "/api/v1/faucet",
            json={"asset": "USDC", "amount": "1"},
            headers={**h, "Idempotency-Key": "k" * 129},
        )
        assert too_long.status_code == 400 and too_long.json()["code"] == "bad_idempotency_key"
        assert too_long.headers["content-type"] == "application/problem+json"
        long_key = await client.post(
            "/api/v1/faucet",
            json={"asset": "USDC", "amount": "1"},
            headers={**h, "Idempotency-Key": "k" * 64},
        )
        assert long_key.status_code == 200
        empty = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": ""}
        )
        assert empty.status_code == 400 and empty.json()["code"] == "bad_idempotency_key"
        assert await usdc(client, h) == "15001.000000"


async def test_the_longest_accepted_key_works(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "long@example.com"))["token"])
        keyed = {**h, "Idempotency-Key": "k" * 128}  # 128 is accepted: 129 is bad_idempotency_key
        first = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=keyed)
        assert first.status_code == 200, first.text
        again = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=keyed)
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        assert await usdc(client, h) == "5001.000000"


# ---- sign-in routes: answers carry tokens, so they are never stored --------------------------------


async def stored_rows(client: AsyncTestClient[Any]) -> list[Any]:
    from sqlalchemy import select

    from cashmarkets.store.tables import idempotency_keys

    async with services_of(client).db.connect() as conn:
        return list((await conn.execute(select(idempotency_keys))).all())


async def test_signin_answers_are_never_kept_in_the_idempotency_store(tmp_path: Path) -> None:
    # Before: a sign-in with an Idempotency-Key kept its access and refresh tokens, in plain text,
    # in idempotency_keys.response_body for 24 h; a replay handed them out again.
    async with embedded(tmp_path) as client:
        email, password = "tok@example.com", "correct horse battery"
        up = await client.post(
            "/api/v1/signup", json={"email": email, "password": password}, headers={"Idempotency-Key": "up-1"}
        )
        assert up.status_code == 201
        client.cookies.clear()
        answers = []
        # The key is ignored: every call signs in again, with a new sign-in and its own cookie; a
        # trailing slash (same route) changes nothing.
        for path in ("/api/v1/signin", "/api/v1/signin", "/api/v1/signin/"):
            r = await client.post(
                path, json={"email": email, "password": password}, headers={"Idempotency-Key": "in-1"}
            )
            client.cookies.clear()
            assert r.status_code == 200, r.text
            assert "idempotent-replayed" not in r.headers
            assert r.cookies.get("authToken") == r.json()["token"]
            answers.append(r.json())
        # (Access tokens issued in the same second are alike; refresh tokens never are.)
        assert len({a["refreshToken"] for a in answers}) == 3
        refreshed = await client.post(
            "/api/v1/token/refresh",
            json={"refreshToken": answers[0]["refreshToken"]},
            headers={"Idempotency-Key": "rf-1"},
        )
        client.cookies.clear()
        assert refreshed.status_code == 200 and "idempotent-replayed" not in refreshed.headers
        tokens = [up.json()["token"], up.json()["refreshToken"], refreshed.json()["refreshToken"]]
        tokens += [t for a in answers for t in (a["token"], a["refreshToken"])]
        rows = await stored_rows(client)
        assert rows == []
        # Other POSTs are still kept (and nothing stored holds a token).
        h = bearer(answers[1]["token"])
        paid = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": "in-1"}
        )
        assert paid.status_code == 200
        rows = await stored_rows(client)
        assert [row.key for row in rows] == ["in-1"]
        assert not any(t.encode() in bytes(row.response_body or b"") for row in rows for t in tokens)


async def test_a_signup_retried_with_its_cookie_runs_again_and_nothing_is_replayed(tmp_path: Path) -> None:
    # Before: the retry carried the cookie the first answer set, so its key was scoped to the user
    # instead of the IP: it ran again and its 409 was stored; a retry without the cookie replayed
    # the first answer's tokens; and a replayed sign-in had no Set-Cookie.
    async with embedded(tmp_path) as client:
        body = {"email": "retry@example.com", "password": "correct horse battery"}
        # A browser's page: its Origin is the site's (a cookie session needs it, api/csrf.py).
        keyed = {"Idempotency-Key": "signup-1", "Origin": services_of(client).settings.base_url}
        first = await client.post("/api/v1/signup", json=body, headers=keyed)
        assert first.status_code == 201 and first.cookies.get("authToken")
        # The client's jar now holds the cookie: the retry sends it.
        again = await client.post("/api/v1/signup", json=body, headers=keyed)
        assert again.status_code == 409 and again.json()["code"] == "email_taken"
        assert "idempotent-replayed" not in again.headers
        client.cookies.clear()
        bare = await client.post("/api/v1/signup", json=body, headers=keyed)
        assert bare.status_code == 409 and "idempotent-replayed" not in bare.headers
        assert await stored_rows(client) == []
        # The way out of a lost sign-up answer is a sign-in, and a retried sign-in sets its cookie.
        for _ in range(2):
            signin = await client.post("/api/v1/signin", json=body, headers={"Idempotency-Key": "in-2"})
            assert signin.status_code == 200 and "idempotent-replayed" not in signin.headers
            assert signin.cookies.get("authToken") == signin.json()["token"]
            client.cookies.clear()
        # One account, one demo balance.
        h = bearer(signin.json()["token"])
        assert await usdc(client, h) == "5000.000000"


async def test_delete_routes_take_idempotency_keys_like_post(tmp_path: Path) -> None:
    # Before: only POST went through the store; a repeated DELETE ran again (and its answer was
    # not marked as a replay), and a key reused on another DELETE was not refused.
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "del@example.com"))["token"])
        order = {"market": "BTC_USDC", "side": "BUY", "price": "10000", "quantity": "0.001"}
        placed = [(await client.post("/api/v1/spot/orders", json=order, headers=h)).json() for _ in range(2)]
        ids = [p["order"]["orderId"] for p in placed]
        keyed = {**h, "Idempotency-Key": "cancel-1"}
        path = f"/api/v1/spot/orders/{ids[0]}"
        first = await client.delete(path, params={"market": "BTC_USDC"}, headers=keyed)
        assert first.status_code == 200 and first.json()["status"] == "CANCELED"
        assert "idempotent-replayed" not in first.headers
        again = await client.delete(path, params={"market": "BTC_USDC"}, headers=keyed)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        # The same key on another DELETE (another order) is a reused key, and cancels nothing.
        other = await client.delete(
            f"/api/v1/spot/orders/{ids[1]}", params={"market": "BTC_USDC"}, headers=keyed
        )
        assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
        still = (await client.get("/api/v1/spot/openOrders", params={"market": "BTC_USDC"}, headers=h)).json()
        assert [o["orderId"] for o in still["orders"]] == [ids[1]]
        # A 4xx answer is kept too: cancelling an unknown order with a key replays its 404.
        missing = {**h, "Idempotency-Key": "cancel-404"}
        lost = await client.delete("/api/v1/spot/orders/999", params={"market": "BTC_USDC"}, headers=missing)
        assert lost.status_code == 404
        lost_again = await client.delete(
            "/api/v1/spot/orders/999", params={"market": "BTC_USDC"}, headers=missing
        )
        assert lost_again.headers["idempotent-replayed"] == "true" and lost_again.content == lost.content
        assert [row.key for row in await stored_rows(client)] == ["cancel-1", "cancel-404"]

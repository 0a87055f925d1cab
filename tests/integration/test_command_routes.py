"""Engine command ids are scoped by route and key: the same Idempotency-Key (or socket
`idempotencyKey`) on two routes names two commands, each found by `GET /api/v1/commands/{key}
?route=`, and a key that the engine answers with another command's result is a 409, never a 500
(or, on the socket, error 10 "retry with the same key", which could never succeed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect

from tests.integration.api_helpers import bearer, embedded, services_of, signup, ws_url
from tests.support.prices import tick
from tests.support.ws_client import call

SPOT = "/api/v1/spot"


async def outcome(client: AsyncTestClient[Any], h: dict[str, str], key: str, route: str) -> Any:
    for _ in range(200):
        found = await client.get(f"/api/v1/commands/{key}", params={"route": route}, headers=h)
        if found.status_code != 404:
            return found
        await asyncio.sleep(0.01)
    return found


async def test_one_key_on_the_faucet_then_on_a_cancel_names_two_commands(tmp_path: Path) -> None:
    # Before: the cancel's command id was `<user>:<key>`, the faucet's too; the engine answered
    # the cancel with the faucet's result, the route asserted an OrderView: 500, nothing canceled.
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "routes@example.com"))["token"])
        placed = await client.post(
            f"{SPOT}/orders",
            json={"market": "BTC_USDC", "side": "BUY", "price": "10000", "quantity": "0.001"},
            headers=h,
        )
        assert placed.status_code == 200, placed.text
        order_id = placed.json()["order"]["orderId"]
        # The faucet with key "k" answers 504 (the edge frees the key; the command still applies).
        settings = services_of(client).settings
        settings.command_timeout_s = 0.000001
        slow = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "3"}, headers={**h, "Idempotency-Key": "k"}
        )
        settings.command_timeout_s = 5.0
        assert slow.status_code == 504, slow.text
        paid = await outcome(client, h, "k", "/api/v1/faucet")
        assert paid.status_code == 200 and paid.json()["status"] == "accepted"
        cancel = await client.delete(
            f"{SPOT}/orders/{order_id}", params={"market": "BTC_USDC"}, headers={**h, "Idempotency-Key": "k"}
        )
        assert cancel.status_code == 200, cancel.text
        assert cancel.json()["status"] == "CANCELED"
        # Each is found by its route (the path as sent; a trailing slash is the same route).
        canceled = await outcome(client, h, "k", f"/api/v1/spot/orders/{order_id}/")
        assert canceled.status_code == 200 and canceled.json()["status"] == "accepted"
        assert canceled.json()["seq"] > paid.json()["seq"]
        balances = (await client.get("/api/v1/balance", headers=h)).json()["balances"]
        assert {b["asset"]: b["held"] for b in balances}["USDC"] == "0.000000"
        assert {b["asset"]: b["balance"] for b in balances}["USDC"] == "5003.000000"
        # Without a route the key is ambiguous: 400 with a clear code; an unused route is 404.
        bare = await client.get("/api/v1/commands/k", headers=h)
        assert bare.status_code == 400 and bare.json()["code"] == "route_required"
        other = await client.get("/api/v1/commands/k", params={"route": "/api/v1/withdrawals"}, headers=h)
        assert other.status_code == 404


async def test_one_key_over_http_and_on_socket_commands_names_one_command_per_route(tmp_path: Path) -> None:
    # Before: the socket's OPEN_POSITION with a key already used by the faucet got the faucet's
    # result, hit an assertion and answered error 10 ("repeat with the same key"), forever.
    async with embedded(tmp_path) as client:
        token = (await signup(client, "sock@example.com"))["token"]
        h = bearer(token)
        await tick(client, "ETH", 300_000, 300_050)
        paid = await client.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": "w"}
        )
        assert paid.status_code == 200
        async with connect(ws_url(client, f"token={token}")) as ws:
            order = {"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 2, "idempotencyKey": "w"}
            opened = await call(ws, "OPEN_POSITION", order, request_id=1)
            assert opened.get("result", {}).get("event") == "opened", opened
            again = await call(ws, "OPEN_POSITION", order, request_id=2)
            assert again["result"]["orderId"] == opened["result"]["orderId"]  # a repeat: the same trade
            close = {"orderId": opened["result"]["orderId"], "idempotencyKey": "w"}
            closed = await call(ws, "CLOSE_POSITION", close, request_id=3)
            assert closed.get("result", {}).get("event") == "closed", closed
            # The same key and command name for another product (a chart position) is another
            # request on the same route: refused as a reused key (code 9), not "retry" (10).
            chart = {"game": "btc-30s", "side": "long", "stake": "1", "leverage": 2, "idempotencyKey": "w"}
            reused = await call(ws, "OPEN_POSITION", chart, request_id=4)
            assert reused["error"]["code"] == 9, reused
            assert reused["error"]["reason"] == "idempotency_key_reused"
        for route in ("/api/v1/faucet", "OPEN_POSITION", "CLOSE_POSITION"):
            found = await outcome(client, h, "w", route)
            assert found.status_code == 200 and found.json()["status"] == "accepted", route
        trades = (await client.get("/api/v1/trades/open", headers=h)).json()["trades"]
        assert trades == []

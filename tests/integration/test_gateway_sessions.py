"""The WebSocket gateway keeps a socket signed in only while its token would still be accepted
over HTTP (issue 15, item 2), on an embedded server: a socket is closed with 4001 when its token
expires unless a fresh token came with AUTH first, and within about a second when its sign-in is
revoked or its account disabled; commands over the socket check the live state themselves."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cashmarkets.core.products.leverage import PriceTick
from cashmarkets.core.results import Accepted
from tests.integration.api_helpers import (
    PASSWORD,
    admin,
    bearer,
    embedded,
    on_app_loop,
    services_of,
    signup,
    ws_url,
)

RECV_TIMEOUT_S = 5.0
# A change reaches every check within the state TTL (1 s) or the gateway's sweep (every 1 s);
# the rest is slack for a loaded test machine.
CLOSE_WITHIN_S = 2.5


async def me_status(client: AsyncTestClient[Any], token: str) -> int:
    return (await client.get("/api/v1/me", headers=bearer(token))).status_code


async def signin(client: AsyncTestClient[Any], email: str) -> Any:
    response = await client.post("/api/v1/signin", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    return response


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
    assert isinstance(message, str), message
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def call(ws: ClientConnection, method: str, *params: Any, request_id: int = 1) -> dict[str, Any]:
    await ws.send(json.dumps({"method": method, "params": list(params), "id": request_id}))
    return await recv_json(ws)


async def subscribe_account(ws: ClientConnection) -> dict[str, Any]:
    """SUBSCRIBE account: its snapshot (the USDC balance) and the reply."""
    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 100}))
    snapshot = await recv_json(ws)
    assert snapshot["stream"] == "account" and "balance" in snapshot["data"], snapshot
    assert await recv_json(ws) == {"id": 100, "result": None}
    return snapshot


async def closed_by_server(ws: ClientConnection, timeout_s: float = RECV_TIMEOUT_S) -> tuple[Any, list[Any]]:
    """Read until the server closes; (its close frame, the messages read before)."""
    seen: list[Any] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            seen.append(await asyncio.wait_for(ws.recv(), timeout_s))
    return closed.value.rcvd, seen


def short_lived(client: AsyncTestClient[Any], body: dict[str, Any], left_s: int) -> tuple[str, int]:
    """An access token of the same sign-in as `body["token"]` that expires in about `left_s`
    seconds (at most one less: `exp` is in whole seconds); (token, exp)."""
    tokens = services_of(client).tokens
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    token = tokens.issue(
        body["user"]["id"],
        "player",
        session=claims["sid"],
        version=claims["ver"],
        now_s=int(time.time()) - tokens.access_ttl_s + left_s,
    )
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return token, int(exp)


async def tick(client: AsyncTestClient[Any], symbol: str, bid: int, ask: int) -> None:
    runtime = services_of(client).runtime
    cmd = PriceTick(command_id=f"tick-{symbol}-{runtime.engine.seq}", symbol=symbol, bid=bid, ask=ask)
    assert isinstance(await on_app_loop(client, runtime.submit(cmd)), Accepted)


async def usdc_available(client: AsyncTestClient[Any], user_id: str) -> int:
    """The user's USDC not held (by withdrawals, positions' margin), in minor units."""
    accounts = await on_app_loop(client, services_of(client).balances.accounts_of(user_id))
    return int(next(a.available for a in accounts if a.asset == "USDC"))


async def test_a_socket_is_closed_with_4001_when_its_token_expires(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "exp@example.com")
        uid = body["user"]["id"]
        short, exp = short_lived(client, body, 2)
        gateway = services_of(client).gateway
        async with connect(ws_url(client, f"token={short}")) as ws:
            await subscribe_account(ws)
            faucet = await client.post(
                "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(body["token"])
            )
            assert faucet.status_code == 200
            assert (await recv_json(ws))["data"]["balance"] == "5001.000000"  # the stream flows ...
            frame, _ = await closed_by_server(ws)
            assert frame is not None and (frame.code, frame.reason) == (4001, "token expired")
            assert time.time() >= exp - 0.05
        # ... and stops: the connection and its account topic are gone from the gateway.
        assert f"account:{uid}" not in gateway.registry.topics and uid not in gateway.per_user
        assert await me_status(client, short) == 401  # as over HTTP


async def test_a_fresh_token_by_auth_before_expiry_keeps_the_socket_open(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "re@example.com")
        other = await signup(client, "other@example.com")
        uid = body["user"]["id"]
        short, exp = short_lived(client, body, 2)
        async with connect(ws_url(client, f"token={short}")) as ws:
            await subscribe_account(ws)
            # Another user's token is refused and changes nothing.
            assert (await call(ws, "AUTH", other["token"], request_id=2))["error"]["code"] == 6
            assert await call(ws, "AUTH", body["token"], request_id=3) == {"id": 3, "result": uid}
            await asyncio.sleep(max(0.0, exp - time.time()) + 1.5)  # past the old expiry and a sweep
            faucet = await client.post(
                "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(body["token"])
            )
            assert faucet.status_code == 200
            assert (await recv_json(ws))["data"]["balance"] == "5001.000000"
            assert (await call(ws, "LIST_SUBSCRIPTIONS", request_id=4))["result"] == ["account"]


async def test_a_revoked_sign_in_or_a_disabled_account_closes_the_socket_within_a_second(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "out@example.com")
        second = (await signin(client, "out@example.com")).json()
        victim = await signup(client, "victim@example.com")
        boss = await admin(client)
        async with (
            connect(ws_url(client, f"token={body['token']}")) as first_ws,
            connect(ws_url(client)) as second_ws,
            connect(ws_url(client, f"token={victim['token']}")) as victim_ws,
        ):
            await subscribe_account(first_ws)
            assert (await call(second_ws, "AUTH", second["token"]))["result"] == body["user"]["id"]
            await subscribe_account(second_ws)
            await subscribe_account(victim_ws)
            out = await client.post("/api/v1/signout", json={"refreshToken": body["refreshToken"]})
            client.cookies.clear()
            assert out.status_code == 200
            began = time.monotonic()
            frame, _ = await closed_by_server(first_ws)
            assert frame is not None and (frame.code, frame.reason) == (
                4001,
                "token revoked or account disabled",
            )
            assert time.monotonic() - began < CLOSE_WITHIN_S
            # The same user's other sign-in keeps its socket.
            assert (await call(second_ws, "LIST_SUBSCRIPTIONS", request_id=2))["result"] == ["account"]
            disabled = await client.post(
                f"/api/v1/admin/users/{victim['user']['id']}/status",
                json={"status": "disabled"},
                headers=boss,
            )
            assert disabled.status_code == 200
            began = time.monotonic()
            frame, _ = await closed_by_server(victim_ws)
            assert frame is not None and frame.code == 4001
            assert time.monotonic() - began < CLOSE_WITHIN_S
            assert (await call(second_ws, "LIST_SUBSCRIPTIONS", request_id=3))["result"] == ["account"]


async def test_a_revoked_token_on_the_upgrade_never_gets_the_account_stream(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "up@example.com")
        out = await client.post("/api/v1/signout", json={"refreshToken": body["refreshToken"]})
        client.cookies.clear()
        assert out.status_code == 200
        for _ in range(2):  # not known yet (closed once read), then known (refused at once)
            try:
                async with connect(ws_url(client, f"token={body['token']}")) as ws:
                    # Held until the sign-in is checked, then the connection is closed instead.
                    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 1}))
                    frame, seen = await closed_by_server(ws)
                    assert frame is not None and frame.code == 4001 and seen == []
            except InvalidStatus as refused:
                assert refused.response.status_code == 401


async def test_socket_commands_see_the_live_status(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        body = await signup(client, "cmd@example.com")
        uid = body["user"]["id"]
        boss = await admin(client)
        gateway = services_of(client).gateway

        async def stop_sweep() -> None:  # so that the command's own check is what refuses
            if getattr(gateway, "_sweeper", None) is not None:
                gateway._sweeper.cancel()

        await on_app_loop(client, stop_sweep())
        await tick(client, "ETH", 300_000, 300_050)
        order = {"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 2}
        async with connect(ws_url(client, f"token={body['token']}")) as ws:
            balance = await call(ws, "GET_BALANCE", {})
            assert balance["result"]["balances"][0]["balance"] == "5000.000000"
            disabled = await client.post(
                f"/api/v1/admin/users/{uid}/status", json={"status": "disabled"}, headers=boss
            )
            assert disabled.status_code == 200
            refused = await call(ws, "OPEN_POSITION", order, request_id=2)
            assert refused["error"]["code"] == 6 and refused["error"]["reason"] == "token_revoked"
            frame, _ = await closed_by_server(ws)
            assert frame is not None and frame.code == 4001
        assert await usdc_available(client, uid) == 5_000_000_000  # no position was opened

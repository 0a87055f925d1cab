"""One rate limit per user over every channel (embedded server, real sockets): HTTP requests,
socket commands and API-key (`/api/v3`) requests take from the same bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect

from cashmarkets.gateway.protocol import ErrorCode, MsgType
from tests.integration.api_helpers import bearer, embedded, services_of, signup, ws_url
from tests.integration.test_api_binance import signed
from tests.integration.test_gateway import call, frame, recv_binary

# Three requests, then (practically) none: one token per 100 s, far longer than a test.
TIGHT = {
    "rate_limit_user_burst": 3,
    "rate_limit_user_per_s": 0.01,
    "rate_limit_ip_burst": 10_000,
    "rate_limit_ip_per_s": 10_000.0,
}


def limited(kind: str) -> float:
    from cashmarkets.ops.metrics import REGISTRY

    return REGISTRY.get_sample_value("cashmarkets_rate_limited_total", {"kind": kind}) or 0.0


async def test_http_requests_and_socket_commands_take_from_one_bucket(tmp_path: Path) -> None:
    async with embedded(tmp_path, **TIGHT) as client:
        alice = (await signup(client, "alice@example.com"))["token"]
        bob = (await signup(client, "bob@example.com"))["token"]
        ws_before = limited("ws_user")
        # HTTP first: three requests spend alice's bucket, then her socket command is refused.
        for _ in range(3):
            assert (await client.get("/api/v1/balance", headers=bearer(alice))).status_code == 200
        async with connect(ws_url(client, f"token={alice}")) as ws:
            reply = await call(ws, "GET_BALANCE", {})
            error = reply["error"]
            assert (error["code"], error["reason"]) == (ErrorCode.RATE_LIMITED, "rate_limited")
            assert error["retryAfterMs"] > 1_000  # the next token is ~100 s away
            # A refusal, not a disconnect: the connection still answers.
            assert (await call(ws, "LIST_SUBSCRIPTIONS", request_id=2))["result"] == []
        # The socket first (binary codec): three commands spend bob's bucket, then HTTP is refused.
        runtime = services_of(client).extras["runtime"]
        async with connect(ws_url(client, f"token={bob}&codec=binary")) as ws:
            for sequence in (1, 2, 3):
                await ws.send(frame(MsgType.GET_BALANCE, sequence, {}))
                assert (await recv_binary(ws))[0] == MsgType.BALANCE_UPDATE
            seq_before = runtime.engine.seq
            order = {"asset": "ETH", "type": "long", "margin": 1_000, "leverage": 2}
            await ws.send(frame(MsgType.OPEN_POSITION, 4, order))
            kind, sequence, body = await recv_binary(ws)
            assert (kind, sequence, body["requestType"]) == (MsgType.ERROR, 4, MsgType.OPEN_POSITION)
            assert (body["code"], body["reason"]) == (ErrorCode.RATE_LIMITED, "rate_limited")
            assert body["retryAfterMs"] > 1_000
            assert runtime.engine.seq == seq_before  # refused before it reached the engine
        refused = await client.get("/api/v1/balance", headers=bearer(bob))
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert "user" in refused.json()["detail"]
        assert limited("ws_user") == ws_before + 2
        # Nobody else pays for them.
        carol = (await signup(client, "carol@example.com"))["token"]
        assert (await client.get("/api/v1/balance", headers=bearer(carol))).status_code == 200


async def keyed(client: AsyncTestClient[Any], email: str) -> tuple[dict[str, str], str, str]:
    """A user and an API key (creating it is one request on the user's bucket)."""
    h = bearer((await signup(client, email))["token"])
    created = await client.post("/api/v1/apikeys", json={"label": "bot"}, headers=h)
    assert created.status_code == 201, created.text
    return h, created.json()["apiKey"], created.json()["secret"]


async def test_api_key_requests_are_charged_to_the_keys_user(tmp_path: Path) -> None:
    async with embedded(tmp_path, **TIGHT) as client:
        before = limited("apikey_user")
        h, key, secret = await keyed(client, "bot@example.com")  # 2 tokens left
        for _ in range(2):
            r = await client.get("/api/v3/account?" + signed(secret), headers={"X-MBX-APIKEY": key})
            assert r.status_code == 200, r.text
        r = await client.get("/api/v3/account?" + signed(secret), headers={"X-MBX-APIKEY": key})
        assert r.status_code == 429 and r.json()["code"] == -1003  # Binance's "too many requests"
        assert int(r.headers["retry-after"]) >= 1
        assert limited("apikey_user") == before + 1
        # The same bucket as the user's token: their HTTP requests are refused too ...
        assert (await client.get("/api/v1/balance", headers=h)).status_code == 429
        # ... and their socket commands.
        token = h["Authorization"][7:]
        async with connect(ws_url(client, f"token={token}")) as ws:
            assert (await call(ws, "GET_BALANCE", {}))["error"]["code"] == ErrorCode.RATE_LIMITED

        # Unsigned or badly signed requests are not charged to the key's user (the IP limit is
        # theirs): a leaked key without its secret cannot spend the user's bucket.
        _, key2, secret2 = await keyed(client, "other-bot@example.com")  # 2 tokens left
        for _ in range(5):
            bad = await client.get("/api/v3/account?" + signed("wrong"), headers={"X-MBX-APIKEY": key2})
            assert bad.json()["code"] == -1022
        for _ in range(2):
            r = await client.get("/api/v3/account?" + signed(secret2), headers={"X-MBX-APIKEY": key2})
            assert r.status_code == 200, r.text

        # A request with both the user's token and key is charged once, not twice.
        h3, key3, secret3 = await keyed(client, "both@example.com")  # 2 tokens left
        both = {**h3, "X-MBX-APIKEY": key3}
        for _ in range(2):
            r = await client.get("/api/v3/account?" + signed(secret3), headers=both)
            assert r.status_code == 200, r.text
        assert (await client.get("/api/v3/account?" + signed(secret3), headers=both)).status_code == 429

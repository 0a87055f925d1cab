"""One rate limit per user over every channel (embedded server, real sockets): HTTP requests,
socket commands and API-key (`/api/v3`) requests take from the same bucket; and the cap on a
user's commands in flight over all their sockets."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect

from cashmarkets.gateway.protocol import ErrorCode, MsgType
from tests.integration.api_helpers import bearer, embedded, services_of, signup, ws_url
from tests.support.binance import signed
from tests.support.ws_client import call, frame, recv_binary, recv_json

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
        runtime = services_of(client).runtime
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


async def test_commands_in_flight_are_capped_per_user_over_all_their_sockets(tmp_path: Path) -> None:
    async with embedded(
        tmp_path, ws_commands_in_flight_per_user=2, ws_commands_in_flight_per_connection=3
    ) as client:
        signed_up = await signup(client, "busy@example.com")
        token, user_id = signed_up["token"], signed_up["user"]["id"]
        other_up = await signup(client, "idle@example.com")
        other, other_id = other_up["token"], other_up["user"]["id"]
        gateway = services_of(client).gateway
        # Hold the commands at the door of the real command path until released.
        release = threading.Event()
        real = gateway.commands
        started: list[int] = []

        async def held(uid: str, kind: int, payload: dict[str, Any]) -> Any:
            started.append(kind)
            while not release.is_set():
                await asyncio.sleep(0.005)
            return await real(uid, kind, payload)

        gateway.commands = held

        async def until(condition: Any, what: str) -> None:
            for _ in range(500):
                if condition():
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{what}: {gateway.commands_per_user}, waiting {gateway.waiting}")

        def balance(request_id: int) -> str:
            return json.dumps({"method": "GET_BALANCE", "params": [{}], "id": request_id})

        async with (
            connect(ws_url(client, f"token={token}")) as a,
            connect(ws_url(client, f"token={token}")) as b,
            connect(ws_url(client, f"token={other}")) as c,
        ):
            for request_id in (1, 2):
                await a.send(balance(request_id))
            await until(lambda: gateway.commands_per_user.get(user_id) == 2, "A's two running")
            # A's two fill the user's slots: B's command (another socket, under its own cap)
            # waits for one, unanswered, instead of running.
            await b.send(balance(3))
            await until(lambda: len(gateway.waiting.get(user_id, {})) == 1, "B's command waiting")
            assert gateway.commands_per_user[user_id] == 2 and len(started) == 2
            # Another user is not held up by them: their command runs.
            await c.send(balance(4))
            await until(lambda: gateway.commands_per_user.get(other_id) == 1, "C's command running")
            # A connection's own cap counts running and waiting commands: B's 4th is refused.
            for request_id in (5, 6, 7):
                await b.send(balance(request_id))
            refused = await recv_json(b)
            assert refused["id"] == 7
            assert (refused["error"]["code"], refused["error"]["reason"]) == (
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                "too_many_in_flight",
            )
            assert len(started) == 3  # A's two and C's: B's three still wait
            release.set()
            answers = [await recv_json(a), await recv_json(a)]
            assert sorted(m["id"] for m in answers) == [1, 2]
            assert all(m["result"]["balances"][0]["asset"] == "USDC" for m in answers)
            assert sorted([(await recv_json(b))["id"] for _ in range(3)]) == [3, 5, 6]  # none lost
            assert (await recv_json(c))["id"] == 4
            # Slots are free again once answered (freed before the answer is sent): keeping
            # exactly the cap in flight over both sockets, the next pair sent as soon as the last
            # is answered, never waits and is never refused.
            for request_id in range(10, 30):
                await a.send(balance(request_id))
                await b.send(balance(request_id))
                for ws in (a, b):
                    reply = await recv_json(ws)
                    assert reply["id"] == request_id and "result" in reply, reply
            assert gateway.waiting == {}
        await until(lambda: user_id not in gateway.commands_per_user, "all slots free")

"""One rate limit per user over every channel (embedded server, real sockets): HTTP requests
and socket commands take from the same bucket."""

from __future__ import annotations

from pathlib import Path

from websockets.asyncio.client import connect

from cashmarkets.gateway.protocol import ErrorCode, MsgType
from tests.integration.api_helpers import bearer, embedded, services_of, signup, ws_url
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

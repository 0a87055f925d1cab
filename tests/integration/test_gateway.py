"""The WebSocket gateway of the embedded server, through real WebSocket clients (the `websockets`
library) over loopback: both codecs, subscriptions, sequence numbers, the last-message cache,
private streams, bad input, limits and the slow-consumer policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cashmarkets.gateway.protocol import HEADER, MsgType
from tests.integration.api_helpers import bearer, embedded, on_app_loop, services_of, signup, ws_url
from tests.support.prices import tick
from tests.support.ws_client import RECV_TIMEOUT_S, call, frame, recv_binary, recv_json


@asynccontextmanager
async def app(tmp_path: Path, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with embedded(tmp_path, **overrides) as client:
        yield client


async def test_json_subscribe_sequence_list_and_unsubscribe(tmp_path: Path) -> None:
    async with app(tmp_path) as client, connect(ws_url(client)) as ws:
        info = (await client.get("/api/v1/info")).json()["websocket"]
        assert info["url"] == ws_url(client) and "bookTicker.BTC_USDC_PERP" in info["topics"]
        assert await call(ws, "SUBSCRIBE", "bookTicker.BTC_USDC_PERP") == {"id": 1, "result": None}
        await tick(client, "BTC", 6_500_000, 6_500_100)
        await tick(client, "BTC", 6_500_200, 6_500_300)
        first, second = await recv_json(ws), await recv_json(ws)
        assert first["stream"] == "bookTicker.BTC_USDC_PERP" and first["seq"] + 1 == second["seq"]
        assert (first["data"]["bid"], first["data"]["ask"]) == ("65000.00", "65001.00")
        assert second["data"]["symbol"] == "BTC_USDC_PERP" and second["data"]["bid"] == "65002.00"
        listed = await call(ws, "LIST_SUBSCRIPTIONS", request_id=2)
        assert listed == {"id": 2, "result": ["bookTicker.BTC_USDC_PERP"]}
        assert await call(ws, "UNSUBSCRIBE", "bookTicker.BTC_USDC_PERP", request_id=3) == {
            "id": 3,
            "result": None,
        }
        await tick(client, "BTC", 6_500_400, 6_500_500)  # not for us any more
        assert await call(ws, "SUBSCRIBE", "bookTicker.ETH_USDC_PERP", request_id=4) == {
            "id": 4,
            "result": None,
        }
        await tick(client, "ETH", 300_000, 300_010)
        eth = await recv_json(ws)  # the BTC tick published before it never arrived
        assert eth["stream"] == "bookTicker.ETH_USDC_PERP" and eth["data"]["bid"] == "3000.00"


async def test_a_new_subscriber_gets_the_last_message_at_once(tmp_path: Path) -> None:
    async with app(tmp_path) as client:
        for bid in (6_500_000, 6_500_100, 6_500_200):
            await tick(client, "BTC", bid, bid + 10)
        async with connect(ws_url(client)) as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["bookTicker.BTC_USDC_PERP"], "id": 7})
            )
            last, reply = await recv_json(ws), await recv_json(ws)
            assert last["data"]["bid"] == "65002.00" and last["seq"] == 3
            assert reply == {"id": 7, "result": None}
            await tick(client, "BTC", 6_500_300, 6_500_310)
            assert (await recv_json(ws))["seq"] == 4  # no gap after the cached message


async def test_private_account_streams_reach_their_owner_only(tmp_path: Path) -> None:
    async with app(tmp_path) as client:
        alice = (await signup(client, "alice@example.com"))["token"]
        bob = (await signup(client, "bob@example.com"))["token"]
        await tick(client, "BTC", 6_500_000, 6_500_100)
        async with connect(ws_url(client, f"token={alice}")) as a, connect(ws_url(client)) as b:
            assert (await call(b, "SUBSCRIBE", "account"))["error"]["code"] == 5  # not signed in yet
            assert (await call(b, "AUTH", bob, request_id=2))["result"]  # bob's user id
            # Each subscriber first gets its own state (the 5000 USDC demo balance), then the reply.
            for ws in (a, b):
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 3}))
                snapshot, ok = await recv_json(ws), await recv_json(ws)
                assert snapshot["stream"] == "account" and snapshot["data"]["balance"] == "5000.000000"
                assert ok == {"id": 3, "result": None}
            opened = await client.post(
                "/api/v1/trade/create",
                json={"asset": "BTC", "type": "long", "margin": 10_000, "leverage": 5},
                headers=bearer(alice),
            )
            assert opened.status_code == 200, opened.text
            messages = [await recv_json(a), await recv_json(a)]
            kinds = sorted(("event" in m["data"] and m["data"]["event"]) or "balance" for m in messages)
            assert kinds == ["balance", "opened"]
            balance = next(m for m in messages if "balance" in m["data"])["data"]
            assert balance["balance"] == "4900.000000"
            assert [m["seq"] for m in messages] == [snapshot["seq"] + 1, snapshot["seq"] + 2]
            # Bob's stream carries bob's things only: his own faucet credit comes next, not alice's trade.
            faucet = await client.post(
                "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(bob)
            )
            assert faucet.status_code == 200
            bob_messages = []
            while True:
                message = await recv_json(b)
                bob_messages.append(message)
                if message.get("data", {}).get("balance") == "5001.000000":
                    break
            assert all(m.get("data", {}).get("event") is None for m in bob_messages)


async def test_binary_protocol_auth_subscribe_and_data(tmp_path: Path) -> None:
    async with app(tmp_path) as client:
        token = (await signup(client, "bin@example.com"))["token"]
        async with connect(ws_url(client)) as ws:
            await ws.send(frame(MsgType.AUTH, 11, {"token": "not-a-token"}))
            assert (await recv_binary(ws))[:2] == (MsgType.AUTH_FAILURE, 11)
            await ws.send(frame(MsgType.AUTH, 12, {"token": token}))
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq) == (MsgType.AUTH_SUCCESS, 12) and body["userId"]
            await ws.send(frame(MsgType.SUBSCRIBE_ROUND, 13, {"topic": "bookTicker.SOL_USDC_PERP"}))
            assert await recv_binary(ws) == (MsgType.RESULT, 13, {"requestType": 2, "result": None})
            await tick(client, "SOL", 1_500_000, 1_500_100)
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq) == (MsgType.STREAM_DATA, 1)
            assert body == {
                "stream": "bookTicker.SOL_USDC_PERP",
                "data": {
                    "symbol": "SOL_USDC_PERP",
                    "bid": "150.0000",
                    "ask": "150.0100",
                    "updateId": 0,
                    "exchangeTsUs": 0,
                },
            }
            await ws.send(frame(MsgType.SUBSCRIBE_ROUND, 14, {"topic": "account"}))
            kind, _, body = await recv_binary(ws)
            assert kind == MsgType.BALANCE_UPDATE and body["data"]["asset"] == "USDC"
            assert (await recv_binary(ws))[:2] == (MsgType.RESULT, 14)
            await ws.send(frame(MsgType.LIST_SUBSCRIPTIONS, 15, {}))
            kind, seq, body = await recv_binary(ws)
            assert kind == MsgType.RESULT and body["result"] == ["account", "bookTicker.SOL_USDC_PERP"]


async def test_bad_input_gets_an_error_and_the_connection_lives_on(tmp_path: Path) -> None:
    async with app(tmp_path, ws_subscriptions_per_connection=2) as client:
        async with connect(ws_url(client)) as ws:
            await ws.send("{not json")
            assert (await recv_json(ws))["error"]["code"] == 1
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": "bookTicker.BTC_USDC_PERP"}))
            assert (await recv_json(ws))["error"]["code"] == 1
            assert (await call(ws, "FROBNICATE"))["error"]["code"] == 2
            assert (await call(ws, "SUBSCRIBE", "bookTicker.DOGE_USDC_PERP"))["error"]["code"] == 3
            assert (await call(ws, "SUBSCRIBE", "x" * 500))["error"]["code"] == 3
            assert (await call(ws, "AUTH", "forged.token.here"))["error"]["code"] == 6
            limited = await call(
                ws,
                "SUBSCRIBE",
                "bookTicker.BTC_USDC_PERP",
                "bookTicker.ETH_USDC_PERP",
                "bookTicker.SOL_USDC_PERP",
            )
            assert limited["error"]["code"] == 4
            assert (await call(ws, "LIST_SUBSCRIPTIONS"))["result"] == []  # all or nothing
        async with connect(ws_url(client)) as ws:
            await ws.send(b"\x01\x06")  # shorter than the header
            assert (await recv_binary(ws))[0] == MsgType.ERROR
            await ws.send(HEADER.pack(1, MsgType.SUBSCRIBE_ROUND, 0, 5) + b"\x85\xa3")  # truncated payload
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq, body["code"]) == (MsgType.ERROR, 5, 1)
            await ws.send(frame(MsgType.SUBSCRIBE_ROUND, 6, {"topic": "bookTicker.BTC_USDC_PERP"}, version=9))
            assert (await recv_binary(ws))[2]["code"] == 8
            await ws.send(frame(0x42, 7, {}))
            assert (await recv_binary(ws))[2]["code"] == 2
            await ws.send(frame(MsgType.SUBSCRIBE_ROUND, 8, {"topic": "account"}))  # not signed in
            assert (await recv_binary(ws))[2]["code"] == 5
            await ws.send(frame(MsgType.LIST_SUBSCRIPTIONS, 9, {}))
            assert (await recv_binary(ws))[2]["result"] == []


async def test_oversize_frames_close_the_connection_and_bad_tokens_are_refused(tmp_path: Path) -> None:
    async with app(tmp_path, ws_message_bytes_max=1024) as client:
        async with connect(ws_url(client)) as ws:
            await ws.send("x" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(client, "token=forged")):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as missing:
            async with connect(ws_url(client).replace("/ws", "/nope")):
                pass
        assert missing.value.response.status_code == 404
        # The gateway still serves after all that.
        async with connect(ws_url(client)) as ws:
            assert (await call(ws, "LIST_SUBSCRIPTIONS"))["result"] == []


async def test_a_slow_consumer_is_cut_off_and_a_fast_one_keeps_every_message(tmp_path: Path) -> None:
    async with app(tmp_path, ws_outbound_buffer_bytes_max=64 * 1024) as client:
        registry = services_of(client).gateway.registry
        fast = await connect(ws_url(client))
        slow = await connect(ws_url(client), max_queue=1)  # stops reading after one message
        for ws in (fast, slow):
            assert await call(ws, "SUBSCRIBE", "bookTicker.BTC_USDC_PERP") == {"id": 1, "result": None}
        payload = {"blob": "x" * 8_000}
        count = 2_000

        async def publish() -> None:
            for i in range(count):
                registry.publish("bookTicker.BTC_USDC_PERP", payload)
                await asyncio.sleep(0.001 if i % 10 == 0 else 0)  # a pace a healthy reader keeps up with

        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < count:
                received.append((await recv_json(fast))["seq"])

        reader = asyncio.create_task(read_fast())
        await on_app_loop(client, publish())
        await asyncio.wait_for(reader, 30)
        assert received == list(range(1, count + 1))  # every message, in order, no gap
        with pytest.raises(ConnectionClosed) as cut:
            while True:
                await asyncio.wait_for(slow.recv(), RECV_TIMEOUT_S)
        assert cut.value.rcvd is not None and cut.value.rcvd.code == 1013
        assert "slow consumer" in cut.value.rcvd.reason
        await fast.close()


async def test_commands_over_the_socket_take_the_http_command_path(tmp_path: Path) -> None:
    async with app(tmp_path) as client:
        token = (await signup(client, "cmd@example.com"))["token"]
        await tick(client, "ETH", 300_000, 300_050)
        async with connect(ws_url(client)) as ws:
            # Binary: not signed in yet, then OPEN_POSITION, GET_BALANCE, CLOSE_POSITION twice.
            await ws.send(
                frame(
                    MsgType.OPEN_POSITION, 1, {"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 2}
                )
            )
            assert (await recv_binary(ws))[2]["code"] == 5
            await ws.send(frame(MsgType.AUTH, 2, {"token": token}))
            assert (await recv_binary(ws))[0] == MsgType.AUTH_SUCCESS
            order = {"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 2, "idempotencyKey": "o-1"}
            await ws.send(frame(MsgType.OPEN_POSITION, 3, order))
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq, body["requestType"]) == (MsgType.POSITION_UPDATE, 3, MsgType.OPEN_POSITION)
            opened = body["data"]
            assert (opened["event"], opened["openPrice"], opened["margin"]) == ("opened", "3000.50", 5_000)
            await ws.send(frame(MsgType.OPEN_POSITION, 4, order))  # the same key again: the same trade
            assert (await recv_binary(ws))[2]["data"]["orderId"] == opened["orderId"]
            await ws.send(frame(MsgType.GET_BALANCE, 5, {}))
            kind, _, body = await recv_binary(ws)
            assert kind == MsgType.BALANCE_UPDATE
            assert body["data"]["balances"] == [
                {"asset": "USDC", "balance": "4950.000000", "available": "4950.000000"}
            ]
            await ws.send(frame(MsgType.CLOSE_POSITION, 6, {"orderId": opened["orderId"]}))
            kind, _, body = await recv_binary(ws)
            assert kind == MsgType.POSITION_UPDATE and body["data"]["closePrice"] == "3000.00"
            await ws.send(frame(MsgType.CLOSE_POSITION, 7, {"orderId": opened["orderId"]}))
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq, body["code"], body["reason"]) == (MsgType.ERROR, 7, 9, "position_not_found")
            await ws.send(
                frame(
                    MsgType.OPEN_POSITION,
                    8,
                    {"asset": "ETH", "type": "long", "margin": "5000", "leverage": 2},
                )
            )
            assert (await recv_binary(ws))[2]["code"] == 1  # margin must be an integer, as over HTTP
            await ws.send(
                frame(
                    MsgType.OPEN_POSITION, 9, {"asset": "ETH", "type": "long", "margin": 10**8, "leverage": 2}
                )
            )
            assert (await recv_binary(ws))[2]["reason"] == "insufficient_funds"
        async with connect(ws_url(client, f"token={token}")) as ws:
            # JSON: the same commands as methods with one object.
            reply = await call(
                ws, "OPEN_POSITION", {"asset": "ETH", "type": "short", "margin": 1_000, "leverage": 3}
            )
            assert reply["result"]["event"] == "opened" and reply["result"]["openPrice"] == "3000.00"
            assert (await call(ws, "GET_BALANCE", "not an object", request_id=2))["error"]["code"] == 1
        history = (await client.get("/api/v1/trades/open", headers=bearer(token))).json()["trades"]
        assert [t["type"] for t in history] == ["short"]  # one open trade left; the key made one, not two


async def test_connection_limits_heartbeats_and_metrics(tmp_path: Path) -> None:
    from cashmarkets.ops.metrics import REGISTRY

    def limited() -> float:
        labels = {"reason": "connection_limit"}
        return REGISTRY.get_sample_value("cashmarkets_ws_disconnects_total", labels) or 0.0

    before = limited()
    limits = {"ws_connections_per_ip": 2, "ws_ping_idle_s": 0.3, "ws_pong_timeout_s": 0.3}
    async with app(tmp_path, metrics_token="metrics-token", **limits) as client:
        first, second = await connect(ws_url(client)), await connect(ws_url(client))
        third = await connect(ws_url(client))
        with pytest.raises(ConnectionClosed) as refused:
            await asyncio.wait_for(third.recv(), RECV_TIMEOUT_S)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
        await second.close()
        # A client that never answers pings is closed: a raw socket that only did the handshake.
        port = services_of(client).ws_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT_S)
        seen = b""
        while chunk := await asyncio.wait_for(reader.read(4096), RECV_TIMEOUT_S):  # until the server hangs up
            seen += chunk
        assert seen[:1] == b"\x89"  # it was pinged first (FIN + opcode 9), then dropped
        writer.close()
        # The healthy client answered its pings (websockets does) and is still served.
        assert (await call(first, "LIST_SUBSCRIPTIONS"))["result"] == []
        await first.close()
        text = (await client.get("/metrics", headers=bearer("metrics-token"))).text
        assert "cashmarkets_ws_messages_sent_total" in text and "cashmarkets_ws_connections" in text
        assert limited() == before + 1


async def test_the_account_snapshot_holds_balances_and_open_positions(tmp_path: Path) -> None:
    async with app(tmp_path) as client:
        token = (await signup(client, "snap@example.com"))["token"]
        other = (await signup(client, "other@example.com"))["token"]
        await tick(client, "SOL", 1_500_000, 1_500_100)
        for who in (token, other):
            opened = await client.post(
                "/api/v1/trade/create",
                json={"asset": "SOL", "type": "short", "margin": 2_000, "leverage": 3},
                headers=bearer(who),
            )
            assert opened.status_code == 200, opened.text
        mine = opened_id = None
        async with connect(ws_url(client, f"token={token}")) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 1}))
            balance, position, reply = await recv_json(ws), await recv_json(ws), await recv_json(ws)
            assert balance["data"] == {"asset": "USDC", "balance": "4980.000000", "available": "4980.000000"}
            mine, opened_id = position["data"], position["data"]["orderId"]
            assert reply == {"id": 1, "result": None}
        assert mine["event"] == "open" and mine["openPrice"] == "150.0000" and mine["margin"] == 2_000
        trades = (await client.get("/api/v1/trades/open", headers=bearer(token))).json()["trades"]
        assert [t["orderId"] for t in trades] == [opened_id]  # the other user's trade is not in it

"""One view of a leverage position at every edge (products/leverage/views.py, docs/views.md):
for the same position the HTTP reply, the socket reply and the account stream carry the same
fields in the same units, through a real embedded server and real WebSocket clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from cashmarkets.core.commands import Command
from cashmarkets.core.results import Accepted
from cashmarkets.gateway.protocol import MsgType
from tests.integration.api_helpers import (
    bearer,
    embedded,
    on_app_loop,
    services_of,
    signup,
    wait_committed,
    ws_url,
)
from tests.support.prices import tick
from tests.support.ws_client import frame, recv_binary, recv_json

GAME = "btc-30s"


async def submit(client: Any, cmd: Command, command_id: str) -> None:
    """An operator's command straight to the engine (the round's lifecycle)."""
    cmd.command_id = command_id
    result = await on_app_loop(client, services_of(client).runtime.submit(cmd))
    assert isinstance(result, Accepted), result


async def next_position_event(stream: ClientConnection, event: str) -> dict[str, Any]:
    """The account stream's next POSITION_UPDATE of `event` (balance updates come in between)."""
    for _ in range(10):
        message = await recv_json(stream)
        if message.get("stream") == "account" and message["data"].get("event") == event:
            data: dict[str, Any] = message["data"]
            return data
    raise AssertionError(f"no {event} position on the account stream")


async def test_http_socket_and_stream_show_a_position_alike(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        token = (await signup(client, "views@example.com"))["token"]
        await tick(client, "ETH", 300_000, 300_050)
        async with connect(ws_url(client, f"token={token}")) as stream, connect(ws_url(client)) as ws:
            await stream.send('{"method": "SUBSCRIBE", "params": ["account"], "id": 1}')
            assert (await recv_json(stream))["data"]["asset"] == "USDC"  # the balance snapshot
            assert await recv_json(stream) == {"id": 1, "result": None}
            await ws.send(frame(MsgType.AUTH, 1, {"token": token}))
            assert (await recv_binary(ws))[0] == MsgType.AUTH_SUCCESS
            order = {"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 2, "takeProfit": "3500.00"}
            await ws.send(frame(MsgType.OPEN_POSITION, 2, order))
            kind, _, body = await recv_binary(ws)
            assert kind == MsgType.POSITION_UPDATE
            replied = body["data"]
            # The unit fix: margin in integer cents on the stream too (it was "50.000000" USDC).
            assert (replied["event"], replied["margin"], replied["openPrice"]) == ("opened", 5_000, "3000.50")
            assert await next_position_event(stream, "opened") == replied
            listed = (await client.get("/api/v1/trades/open", headers=bearer(token))).json()["trades"]
            assert listed == [{k: v for k, v in replied.items() if k != "event"}]

            await ws.send(frame(MsgType.CLOSE_POSITION, 3, {"orderId": replied["orderId"]}))
            kind, _, body = await recv_binary(ws)
            closed = body["data"]
            assert (kind, closed["event"], closed["closeReason"]) == (
                MsgType.POSITION_UPDATE,
                "closed",
                "user",
            )
            streamed = await next_position_event(stream, "closed")
            # The same fields as the reply (closeReason, pnl and payout in cents), plus which position.
            assert streamed == {**closed, "asset": "ETH", "type": "long"}
            assert isinstance(streamed["pnl"], int) and isinstance(streamed["payout"], int)
        await wait_committed(client)
        history = (await client.get("/api/v1/trades", headers=bearer(token))).json()["trades"]
        assert [
            (t["orderId"], t["closeReason"], t["closePrice"], t["pnl"], t["margin"]) for t in history
        ] == [(closed["orderId"], "user", closed["closePrice"], closed["pnl"], 5_000)]


async def test_http_socket_and_stream_show_a_chart_position_alike(tmp_path: Path) -> None:
    from cashmarkets.core.products.chartgame import (
        ChartAnnounceRound,
        ChartBeginRound,
        ChartCommitChain,
        ChartTick,
    )
    from cashmarkets.fairness.chain import SeedChain

    async with embedded(tmp_path) as client:
        token = (await signup(client, "chart-views@example.com"))["token"]
        chain = SeedChain(bytes(range(32)), 3)
        commit = ChartCommitChain(command_id="", game=GAME, chain_id=1, commitment=chain.commitment, length=3)
        await submit(client, commit, "v1")
        await submit(
            client, ChartAnnounceRound(command_id="", game=GAME, round_no=1, start_ms=1_800_000_000_000), "v5"
        )
        begin = ChartBeginRound(
            command_id="", game=GAME, round_no=1, seed=chain.seed(1), beacon_signature=b"\x02" * 48
        )
        await submit(client, begin, "v2")
        await submit(client, ChartTick(command_id="", game=GAME, round_no=1), "v3")
        async with connect(ws_url(client, f"token={token}")) as stream, connect(ws_url(client)) as ws:
            await stream.send('{"method": "SUBSCRIBE", "params": ["account"], "id": 1}')
            assert (await recv_json(stream))["data"]["asset"] == "USDC"
            assert await recv_json(stream) == {"id": 1, "result": None}
            await ws.send(frame(MsgType.AUTH, 1, {"token": token}))
            assert (await recv_binary(ws))[0] == MsgType.AUTH_SUCCESS
            order = {"game": GAME, "side": "short", "stake": "20", "leverage": 3}
            await ws.send(frame(MsgType.OPEN_POSITION, 2, order))
            opened = (await recv_binary(ws))[2]["data"]
            assert (opened["event"], opened["stake"], opened["status"]) == ("chart", "20.000000", "open")
            # The stream now carries the reply's fee and openedCandle too, and no null exit fields.
            assert await next_position_event(stream, "chart") == opened
            await submit(client, ChartTick(command_id="", game=GAME, round_no=1), "v4")
            await ws.send(frame(MsgType.CLOSE_POSITION, 3, {"positionId": opened["positionId"]}))
            closed = (await recv_binary(ws))[2]["data"]
            assert (closed["status"], closed["fee"]) == ("closed", opened["fee"]) and "payout" in closed
            assert await next_position_event(stream, "chart") == closed
        await wait_committed(client)
        listed = (await client.get("/api/v1/chartgame/positions", headers=bearer(token))).json()["positions"]
        assert listed == [{k: v for k, v in closed.items() if k != "event"}]


async def test_http_and_stream_show_a_spot_order_alike(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        token = (await signup(client, "spot-views@example.com"))["token"]
        h = bearer(token)
        faucet = await client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "10000"}, headers=h)
        assert faucet.status_code == 200, faucet.text
        async with connect(ws_url(client, f"token={token}")) as stream:
            await stream.send('{"method": "SUBSCRIBE", "params": ["account"], "id": 1}')
            for _ in range(10):  # the balances' snapshot, then the reply
                if await recv_json(stream) == {"id": 1, "result": None}:
                    break
            body = {"market": "BTC_USDC", "side": "BUY", "type": "LIMIT", "price": "60000", "quantity": "0.1"}
            placed = await client.post("/api/v1/spot/orders", json=body, headers=h)
            assert placed.status_code == 200, placed.text
            order = placed.json()["order"]
            streamed = await next_position_event(stream, "order")
            # The stream now carries the reply's stpMode and createdAtNs too.
            assert streamed == {"event": "order", "execType": "NEW", **order}
            assert (order["price"], order["origQty"], order["remainingQty"]) == (
                "60000.000000",
                "0.10000000",
                "0.10000000",
            )

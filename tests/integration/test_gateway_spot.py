"""Spot streams over real WebSocket clients: depth snapshot + diffs rebuild the engine's book
exactly (random orders, a late subscriber too), trades, bookTicker, klines, the 24 h ticker, and
private execution reports on `account` for the owner only."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from cashmarkets.core.money import format_amount
from cashmarkets.core.products.spot import SpotProduct
from cashmarkets.gateway.depth import LocalBook
from tests.integration.api_helpers import bearer, embedded, services_of, signup, ws_url
from tests.support.ws_client import recv_json

SPOT = "/api/v1/spot"


async def subscribe(ws: ClientConnection, *topics: str) -> list[dict[str, Any]]:
    """SUBSCRIBE; the messages that came before the reply (snapshots, last messages)."""
    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": list(topics), "id": 1}))
    before = []
    while True:
        message = await recv_json(ws)
        if message.get("id") == 1:
            assert message == {"id": 1, "result": None}, message
            return before
        before.append(message)


async def drain(ws: ClientConnection, until_idle_s: float = 0.3) -> list[dict[str, Any]]:
    """Every message that arrives until the socket is quiet for a moment."""
    out = []
    while True:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), until_idle_s)))
        except TimeoutError:
            return out


def engine_levels(client: Any) -> tuple[dict[int, int], dict[int, int]]:
    """The engine's BTC_USDC book in minor units: the truth the streamed book must equal."""
    spot: SpotProduct = services_of(client).runtime.engine.products["spot"]
    m = next(x for x in spot.config.markets if x.symbol == "BTC_USDC")
    book = spot.books["BTC_USDC"]
    bids = {lv.price * m.tick_size: lv.qty * m.lot_size for lv in book.bids.levels.values()}
    asks = {lv.price * m.tick_size: lv.qty * m.lot_size for lv in book.asks.levels.values()}
    return bids, asks


async def funded(client: Any, email: str) -> dict[str, str]:
    h = bearer((await signup(client, email))["token"])
    for asset, amount in (("BTC", "5"), ("USDC", "10000")):
        assert (
            await client.post("/api/v1/faucet", json={"asset": asset, "amount": amount}, headers=h)
        ).status_code == 200
    return h


async def test_depth_stream_rebuilds_the_engine_book_and_market_streams_flow(tmp_path: Path) -> None:
    rng = random.Random(11)
    async with embedded(tmp_path) as client, connect(ws_url(client)) as ws:
        users = [await funded(client, f"u{i}@example.com") for i in range(3)]
        topics = [
            "depth.BTC_USDC",
            "trade.BTC_USDC",
            "bookTicker.BTC_USDC",
            "kline.1m.BTC_USDC",
            "ticker.BTC_USDC",
        ]
        first = await subscribe(ws, *topics)
        local = LocalBook(6, 8)
        snapshot = next(m for m in first if m.get("stream") == "depth.BTC_USDC")
        assert snapshot["data"]["type"] == "snapshot"
        local.on_message(snapshot["data"])
        order_ids: list[tuple[dict[str, str], int]] = []
        late_local: LocalBook | None = None
        late_ws = None
        for i in range(60):
            h = rng.choice(users)
            roll = rng.random()
            if roll < 0.7 or not order_ids:
                side = rng.choice(("BUY", "SELL"))
                price = f"{65000 + rng.randrange(-20, 20) * 5}"
                r = await client.post(
                    f"{SPOT}/orders",
                    json={
                        "market": "BTC_USDC",
                        "side": side,
                        "price": price,
                        "quantity": f"0.00{rng.randrange(1, 9)}",
                    },
                    headers=h,
                )
                assert r.status_code == 200, r.text
                if r.json()["order"]["remainingQty"] != "0.00000000":
                    order_ids.append((h, r.json()["order"]["orderId"]))
            elif roll < 0.85:
                owner, order_id = order_ids.pop(rng.randrange(len(order_ids)))
                await client.delete(f"{SPOT}/orders/{order_id}", params={"market": "BTC_USDC"}, headers=owner)
            else:
                owner, order_id = rng.choice(order_ids)
                await client.post(
                    f"{SPOT}/orders/{order_id}/amend",
                    params={"market": "BTC_USDC"},
                    json={"price": f"{65000 + rng.randrange(-20, 20) * 5}"},
                    headers=owner,
                )
            if i == 30:  # a late subscriber starts from a snapshot of the book as it is then
                late_ws = await connect(ws_url(client))
                late_local = LocalBook(6, 8)
                for m in await subscribe(late_ws, "depth.BTC_USDC"):
                    late_local.on_message(m["data"])
                assert late_local.last_update_id is not None
        messages = await drain(ws)
        streams = {m.get("stream") for m in messages}
        assert {
            "depth.BTC_USDC",
            "trade.BTC_USDC",
            "bookTicker.BTC_USDC",
            "kline.1m.BTC_USDC",
            "ticker.BTC_USDC",
        } <= streams
        for m in messages:
            if m.get("stream") == "depth.BTC_USDC":
                local.on_message(m["data"])  # raises OutOfSync on a gap
        assert (local.bids, local.asks) == engine_levels(client)
        assert late_ws is not None and late_local is not None
        for m in await drain(late_ws):
            late_local.on_message(m["data"])
        assert (late_local.bids, late_local.asks) == engine_levels(client)
        await late_ws.close()
        # Per-topic sequence numbers have no gaps.
        for topic in topics:
            seqs = [m["seq"] for m in messages if m.get("stream") == topic]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic
        trades = [m["data"] for m in messages if m.get("stream") == "trade.BTC_USDC"]
        assert [t["t"] for t in trades] == list(range(1, len(trades) + 1)) and trades
        ticker = [m["data"] for m in messages if m.get("stream") == "ticker.BTC_USDC"][-1]
        assert ticker["n"] == len(trades) and ticker["c"] == trades[-1]["p"]
        kline = [m["data"]["k"] for m in messages if m.get("stream") == "kline.1m.BTC_USDC"][-1]
        assert kline["L"] == trades[-1]["t"] and kline["c"] == trades[-1]["p"]
        bids, asks = engine_levels(client)
        best = [m["data"] for m in messages if m.get("stream") == "bookTicker.BTC_USDC"][-1]
        assert best["b"] == (format_amount(max(bids), 6) if bids else None)
        assert best["a"] == (format_amount(min(asks), 6) if asks else None)


async def test_execution_reports_go_to_the_owner_only(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = await funded(client, "alice@example.com")
        bob = await funded(client, "bob@example.com")
        alice_token = alice["Authorization"].split()[1]
        bob_token = bob["Authorization"].split()[1]
        async with (
            connect(ws_url(client) + f"?token={alice_token}") as wa,
            connect(ws_url(client) + f"?token={bob_token}") as wb,
        ):
            await subscribe(wa, "account")
            await subscribe(wb, "account")
            await drain(wa)
            await drain(wb)
            r = await client.post(
                f"{SPOT}/orders",
                json={"market": "BTC_USDC", "side": "SELL", "price": "65000", "quantity": "0.5"},
                headers=alice,
            )
            order_id = r.json()["order"]["orderId"]
            await client.post(
                f"{SPOT}/orders",
                json={"market": "BTC_USDC", "side": "BUY", "price": "65000", "quantity": "0.2"},
                headers=bob,
            )
            got_a = [m["data"] for m in await drain(wa) if "data" in m]
            got_b = [m["data"] for m in await drain(wb) if "data" in m]
            a_events = [(d.get("event"), d.get("execType") or d.get("role")) for d in got_a if "event" in d]
            b_events = [(d.get("event"), d.get("execType") or d.get("role")) for d in got_b if "event" in d]
            assert a_events == [("order", "NEW"), ("trade", "maker")]
            assert b_events == [("trade", "taker"), ("order", "TRADE")]
            maker_fill = next(d for d in got_a if d.get("event") == "trade")
            assert (maker_fill["orderId"], maker_fill["remainingQty"], maker_fill["status"]) == (
                order_id,
                "0.30000000",
                "PARTIALLY_FILLED",
            )
            assert all(d.get("orderId") != order_id for d in got_b if d.get("event") == "order")
            # A new subscriber to `account` gets its open orders first.
            async with connect(ws_url(client) + f"?token={alice_token}") as again:
                first = await subscribe(again, "account")
                opened = [m["data"] for m in first if m.get("data", {}).get("event") == "order"]
                assert [(o["orderId"], o["execType"], o["remainingQty"]) for o in opened] == [
                    (order_id, "OPEN", "0.30000000")
                ]

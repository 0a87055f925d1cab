"""The trading API (product leverage) in embedded mode: open, close, liquidation, validation,
balances in cents, history from the projection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from cashmarkets.core.products.leverage import PriceTick, pnl_of
from cashmarkets.core.results import Accepted
from tests.integration.api_helpers import bearer, embedded, services_of, signup, wait_projected


async def tick(client: AsyncTestClient[Any], symbol: str, bid: int, ask: int) -> None:
    """Append a price the way the poller does. The app runs its own event loop (the test client's
    thread): the command must be submitted there."""
    runtime = services_of(client).runtime
    cmd = PriceTick(command_id=f"tick-{symbol}-{runtime.engine.seq}", symbol=symbol, bid=bid, ask=ask)
    app_loop = runtime._writer.get_loop()
    result = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runtime.submit(cmd), app_loop))
    assert isinstance(result, Accepted), result


async def test_open_move_close_with_the_balance_computed_by_hand(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "trader@example.com"))["token"])
        assert (await client.get("/api/v1/prices")).json() == {"prices": []}
        no_price = await client.post(
            "/api/v1/trade/create",
            json={"asset": "BTC", "type": "long", "margin": 10_000, "leverage": 10},
            headers=h,
        )
        assert no_price.status_code == 422 and no_price.json()["code"] == "no_price"
        await tick(client, "BTC", 6_500_000, 6_500_100)  # 65000.00 / 65001.00
        prices = (await client.get("/api/v1/prices")).json()["prices"]
        assert len(prices) == 1 and 0 <= prices[0].pop("ageMs") < 5_000
        assert prices == [
            {
                "symbol": "BTC",
                "bid": "65000.00",
                "ask": "65001.00",
                "exchangeTsUs": 0,
                "updateId": 0,
                "stale": False,
            }
        ]
        opened = await client.post(
            "/api/v1/trade/create",
            json={
                "asset": "BTC",
                "type": "long",
                "margin": 10_000,
                "leverage": 10,
                "slippage": 100,
                "price": "65000.00",
                "takeProfit": "70000",
                "stopLoss": "60000",
            },
            headers=h,
        )
        assert opened.status_code == 200, opened.text
        trade = opened.json()
        assert (trade["asset"], trade["type"], trade["margin"], trade["leverage"]) == (
            "BTC",
            "long",
            10_000,
            10,
        )
        assert trade["openPrice"] == "65001.00" and trade["takeProfit"] == "70000.00"
        assert (await client.get("/api/v1/balance/usd", headers=h)).json() == {"balance": 490_000}
        open_trades = (await client.get("/api/v1/trades/open", headers=h)).json()["trades"]
        assert [t["orderId"] for t in open_trades] == [trade["orderId"]]
        await tick(client, "BTC", 6_565_000, 6_565_100)
        closed = await client.post("/api/v1/trade/close", json={"orderId": trade["orderId"]}, headers=h)
        assert closed.status_code == 200, closed.text
        expected_pnl = pnl_of("long", 100 * 1_000_000 * 10, 6_500_100, 6_565_000)
        assert closed.json()["pnl"] == expected_pnl // 10_000
        assert closed.json()["closePrice"] == "65650.00" and closed.json()["closeReason"] == "user"
        usd = (await client.get("/api/v1/balance/usd", headers=h)).json()["balance"]
        assert usd == (5_000 * 1_000_000 + expected_pnl) // 10_000
        twice = await client.post("/api/v1/trade/close", json={"orderId": trade["orderId"]}, headers=h)
        assert twice.status_code == 404 and twice.json()["code"] == "position_not_found"
        await wait_projected(client)
        history = (await client.get("/api/v1/trades", params={"status": "closed"}, headers=h)).json()[
            "trades"
        ]
        assert [(t["orderId"], t["status"], t["closeReason"], t["pnl"]) for t in history] == [
            (trade["orderId"], "closed", "user", expected_pnl // 10_000)
        ]


async def test_liquidation_and_take_profit_by_scripted_prices(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "liq@example.com"))["token"])
        await tick(client, "ETH", 350_000, 350_000)  # 3500.00
        risky = (
            await client.post(
                "/api/v1/trade/create",
                json={"asset": "ETH", "type": "long", "margin": 5_000, "leverage": 50},
                headers=h,
            )
        ).json()
        careful = (
            await client.post(
                "/api/v1/trade/create",
                json={"asset": "ETH", "type": "short", "margin": 5_000, "leverage": 2, "takeProfit": "3400"},
                headers=h,
            )
        ).json()
        await tick(client, "ETH", 339_000, 339_000)  # below the 50x long's liquidation; through the TP
        assert (await client.get("/api/v1/trades/open", headers=h)).json() == {"trades": []}
        await wait_projected(client)
        history = (await client.get("/api/v1/trades", headers=h)).json()["trades"]
        reasons = {t["orderId"]: t["closeReason"] for t in history}
        assert reasons == {risky["orderId"]: "liquidation", careful["orderId"]: "take_profit"}
        # Liquidation lost the margin; the take-profit paid margin + profit.
        usd = (await client.get("/api/v1/balance/usd", headers=h)).json()["balance"]
        profit = -pnl_of("long", 50 * 1_000_000 * 2, 350_000, 339_000) // 10_000  # short: entry bid, exit ask
        assert usd == 500_000 - 5_000 + profit


async def test_bad_trades_are_4xx_with_clear_codes(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        alice = bearer((await signup(client, "a@example.com"))["token"])
        bob = bearer((await signup(client, "b@example.com"))["token"])
        await tick(client, "SOL", 1_500_000, 1_500_100)  # 150.0000
        base = {"asset": "SOL", "type": "long", "margin": 1_000, "leverage": 5}
        cases = [
            ({**base, "asset": "DOGE"}, 400, "validation_failed"),
            ({**base, "type": "up"}, 400, "validation_failed"),
            ({**base, "margin": 0}, 400, "validation_failed"),
            ({**base, "margin": "1000"}, 400, "validation_failed"),
            ({**base, "margin": 10.5}, 400, "validation_failed"),
            ({**base, "leverage": 101}, 400, "validation_failed"),
            ({**base, "slippage": 5_000}, 400, "validation_failed"),
            ({**base, "price": "1e2"}, 400, "invalid_price"),
            ({**base, "price": "140", "slippage": 10}, 422, "slippage_exceeded"),
            ({**base, "takeProfit": "149"}, 422, "bad_take_profit"),
            ({**base, "margin": 100_000_000}, 422, "insufficient_funds"),
        ]
        for payload, status, code in cases:
            response = await client.post("/api/v1/trade/create", json=payload, headers=alice)
            assert (response.status_code, response.json().get("code")) == (status, code), (
                payload,
                response.text,
            )
        mine = (await client.post("/api/v1/trade/create", json=base, headers=alice)).json()
        stolen = await client.post("/api/v1/trade/close", json={"orderId": mine["orderId"]}, headers=bob)
        assert stolen.status_code == 404
        unknown = await client.post("/api/v1/trade/close", json={"orderId": 999}, headers=alice)
        assert unknown.status_code == 404
        assert (await client.post("/api/v1/trade/create", json=base)).status_code == 401
        assets = (await client.get("/api/v1/supportedAssets")).json()["assets"]
        assert [a["symbol"] for a in assets] == ["BTC", "ETH", "SOL"]

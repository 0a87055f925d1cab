"""`/api/v1/spot` on an embedded server: place, fill, cancel, amend, every read, and bad input as a
clear 4xx that holds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.api_helpers import bearer, embedded, signup, wait_committed

SPOT = "/api/v1/spot"


async def funded(
    client: AsyncTestClient[Any], email: str, btc: str = "2", usdc: str = "10000"
) -> dict[str, str]:
    h = bearer((await signup(client, email))["token"])
    for asset, amount in (("BTC", btc), ("USDC", usdc)):
        r = await client.post("/api/v1/faucet", json={"asset": asset, "amount": amount}, headers=h)
        assert r.status_code == 200, r.text
    return h


async def balances(client: AsyncTestClient[Any], h: dict[str, str]) -> dict[str, tuple[str, str]]:
    body = (await client.get("/api/v1/balance", headers=h)).json()
    return {b["asset"]: (b["balance"], b["available"]) for b in body["balances"]}


async def place(client: AsyncTestClient[Any], h: dict[str, str], **body: Any) -> Any:
    return await client.post(f"{SPOT}/orders", json={"market": "BTC_USDC", **body}, headers=h)


async def test_a_trade_end_to_end_with_balances_fees_and_market_data(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        info = (await client.get(f"{SPOT}/exchangeInfo")).json()["markets"]
        btc = next(m for m in info if m["symbol"] == "BTC_USDC")
        assert (btc["tickSize"], btc["lotSize"], btc["minNotional"]) == ("0.010000", "0.00010000", "5.000000")
        alice = await funded(client, "alice@example.com")
        bob = await funded(client, "bob@example.com")

        sell = await place(client, alice, side="SELL", price="65000.00", quantity="0.5", clientOrderId="a-1")
        assert sell.status_code == 200, sell.text
        order = sell.json()["order"]
        assert (order["status"], order["remainingQty"], order["clientOrderId"]) == (
            "NEW",
            "0.50000000",
            "a-1",
        )
        assert (await balances(client, alice))["BTC"] == ("2.00000000", "1.50000000")  # 0.5 held

        buy = await place(client, bob, side="BUY", price="65010", quantity="0.2")
        assert buy.status_code == 200, buy.text
        body = buy.json()
        assert body["order"]["status"] == "FILLED"
        assert body["fills"] == [
            {
                "tradeId": 1,
                "price": "65000.000000",
                "qty": "0.20000000",
                "quoteQty": "13000.000000",
                "fee": "0.00020000",  # taker 10 bps of 0.2 BTC, in BTC
                "feeAsset": "BTC",
            }
        ]
        # Bob (5,000 USDC at signup + 10,000 from the faucet) paid the maker's price, not his
        # limit, and received 0.2 BTC less the taker fee; nothing of his stays held.
        assert (await balances(client, bob)) == {
            "USDC": ("2000.000000", "2000.000000"),
            "BTC": ("2.19980000", "2.19980000"),
        }
        alice_b = await balances(client, alice)
        assert alice_b["USDC"][0] == "27993.500000"  # 15000 + 13000 - 6.5 (maker 5 bps)
        assert alice_b["BTC"] == ("1.80000000", "1.50000000")  # 0.3 still held on the book

        depth = (await client.get(f"{SPOT}/depth", params={"market": "BTC_USDC", "limit": 5})).json()
        assert depth["bids"] == [] and depth["asks"] == [["65000.000000", "0.30000000"]]
        assert depth["lastUpdateId"] > 0
        bt = (await client.get(f"{SPOT}/ticker/bookTicker", params={"market": "BTC_USDC"})).json()
        assert (bt["askPrice"], bt["askQty"], bt["bidPrice"]) == ("65000.000000", "0.30000000", None)

        opened = (await client.get(f"{SPOT}/openOrders", headers=alice)).json()["orders"]
        assert [(o["orderId"], o["executedQty"], o["status"]) for o in opened] == [
            (order["orderId"], "0.20000000", "PARTIALLY_FILLED")
        ]
        await wait_committed(client)
        trades = (await client.get(f"{SPOT}/trades", params={"market": "BTC_USDC"})).json()
        assert [(t["id"], t["price"], t["qty"], t["isBuyerMaker"]) for t in trades] == [
            (1, "65000.000000", "0.20000000", False)
        ]
        mine = (await client.get(f"{SPOT}/myTrades", params={"market": "BTC_USDC"}, headers=alice)).json()[
            "trades"
        ]
        assert [(t["isBuyer"], t["isMaker"], t["fee"], t["feeAsset"]) for t in mine] == [
            (False, True, "6.500000", "USDC")
        ]
        klines = (await client.get(f"{SPOT}/klines", params={"market": "BTC_USDC", "interval": "1m"})).json()
        assert len(klines) == 1 and klines[0][1:6] == [
            "65000.000000",
            "65000.000000",
            "65000.000000",
            "65000.000000",
            "0.20000000",
        ]
        ticker = (await client.get(f"{SPOT}/ticker/24hr", params={"market": "BTC_USDC"})).json()[0]
        assert (ticker["lastPrice"], ticker["volume"], ticker["count"]) == ("65000.000000", "0.20000000", 1)

        # Amend down keeps the order; cancel releases the rest.
        amended = await client.post(
            f"{SPOT}/orders/{order['orderId']}/amend",
            params={"market": "BTC_USDC"},
            json={"quantity": "0.25"},
            headers=alice,
        )
        assert amended.status_code == 200, amended.text
        assert amended.json()["order"]["remainingQty"] == "0.05000000"
        cancelled = await client.delete(
            f"{SPOT}/orders/{order['orderId']}", params={"market": "BTC_USDC"}, headers=alice
        )
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED"
        assert (await balances(client, alice))["BTC"] == ("1.80000000", "1.80000000")
        await wait_committed(client)
        got = await client.get(f"{SPOT}/orders/{order['orderId']}", headers=alice)
        assert got.status_code == 200 and got.json()["status"] == "CANCELED"
        assert (await client.get(f"{SPOT}/orders/{order['orderId']}", headers=bob)).status_code == 404


async def test_bad_orders_are_clear_4xx_and_hold_nothing(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = await funded(client, "carol@example.com", btc="1", usdc="100")
        before = await balances(client, h)
        cases = [
            ({"side": "BUY", "price": "65000.001", "quantity": "0.1"}, 400, "invalid_price"),
            ({"side": "BUY", "price": "65000", "quantity": "0.00001"}, 400, "invalid_quantity"),
            ({"side": "BUY", "quantity": "0.1"}, 400, "missing_price"),
            ({"side": "BUY", "price": "1", "quantity": "0.1", "quoteOrderQty": "5"}, 400, "invalid_quantity"),
            ({"side": "BUY", "type": "MARKET"}, 400, "invalid_quantity"),
            ({"side": "HOLD", "price": "1", "quantity": "1"}, 400, "validation_failed"),
            ({"side": "BUY", "price": "1", "quantity": "1", "market": "DOGE_USDC"}, 400, "unknown_market"),
            ({"side": "BUY", "price": "65000", "quantity": "0.1"}, 422, "insufficient_funds"),
            ({"side": "BUY", "price": "1", "quantity": "0.0001"}, 422, "below_min_notional"),
            (
                {"side": "BUY", "price": "1", "quantity": "1", "clientOrderId": "bad id"},
                400,
                "validation_failed",
            ),
        ]
        for body, status, code in cases:
            r = await place(client, h, **body)
            assert r.status_code == status and r.json()["code"] == code, (body, r.text)
        assert await balances(client, h) == before
        ok = await place(client, h, side="BUY", price="10", quantity="1", clientOrderId="same")
        assert ok.status_code == 200
        dup = await place(client, h, side="BUY", price="10", quantity="1", clientOrderId="same")
        assert dup.status_code == 409 and dup.json()["code"] == "duplicate_client_order_id"
        other = await funded(client, "dan@example.com")
        order_id = ok.json()["order"]["orderId"]
        r = await client.delete(f"{SPOT}/orders/{order_id}", params={"market": "BTC_USDC"}, headers=other)
        assert r.status_code == 404 and r.json()["code"] == "order_not_found"
        r = await client.post(
            f"{SPOT}/orders/{order_id}/amend", params={"market": "BTC_USDC"}, json={}, headers=h
        )
        assert r.status_code == 400 and r.json()["code"] == "nothing_to_amend"
        r = await client.post(
            f"{SPOT}/orders",
            json={"market": "BTC_USDC", "side": "BUY", "price": "10", "quantity": 1},
            headers=h,
        )
        assert r.status_code == 400  # numbers must be strings
        unauth = await client.post(
            f"{SPOT}/orders", json={"market": "BTC_USDC", "side": "BUY", "price": "1", "quantity": "1"}
        )
        assert unauth.status_code == 401


async def test_cancel_all_and_history_pages(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = await funded(client, "erin@example.com")
        ids = []
        for price in ("100", "101", "102", "103", "104"):
            r = await place(client, h, side="BUY", price=price, quantity="0.1")
            ids.append(r.json()["order"]["orderId"])
        r = await client.delete(f"{SPOT}/openOrders", params={"market": "BTC_USDC"}, headers=h)
        assert [o["orderId"] for o in r.json()["orders"]] == ids
        assert (await client.get(f"{SPOT}/openOrders", headers=h)).json()["orders"] == []
        await wait_committed(client)
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"{SPOT}/orders", params=params, headers=h)).json()
            seen += [o["orderId"] for o in page["orders"]]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        assert seen == sorted(ids, reverse=True)
        assert (await balances(client, h))["USDC"] == ("15000.000000", "15000.000000")


async def test_an_admin_halts_and_resumes_a_market(tmp_path: Path) -> None:
    from tests.integration.api_helpers import admin

    async with embedded(tmp_path) as client:
        boss = await admin(client)
        h = await funded(client, "frank@example.com")
        resting = (await place(client, h, side="BUY", price="100", quantity="0.1")).json()["order"]["orderId"]
        path = "/api/v1/admin/spot/markets/BTC_USDC/status"
        assert (await client.post(path, json={"status": "HALTED"}, headers=h)).status_code == 403
        r = await client.post(path, json={"status": "HALTED"}, headers=boss)
        assert r.status_code == 200 and r.json() == {"market": "BTC_USDC", "status": "HALTED"}
        halted = await place(client, h, side="BUY", price="100", quantity="0.1")
        assert halted.status_code == 422 and halted.json()["code"] == "market_halted"
        eth = await place(client, h, side="BUY", price="100", quantity="0.1", market="ETH_USDC")
        assert eth.status_code == 200  # other markets trade on
        cancel = await client.delete(f"{SPOT}/orders/{resting}", params={"market": "BTC_USDC"}, headers=h)
        assert cancel.status_code == 200  # cancels still work
        assert (await client.post(path, json={"status": "PAUSED"}, headers=boss)).status_code == 400
        assert (
            await client.post(
                "/api/v1/admin/spot/markets/NOPE/status", json={"status": "HALTED"}, headers=boss
            )
        ).status_code == 404
        assert (await client.post(path, json={"status": "TRADING"}, headers=boss)).status_code == 200
        assert (await place(client, h, side="BUY", price="100", quantity="0.1")).status_code == 200

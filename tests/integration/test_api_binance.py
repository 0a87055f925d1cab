"""`/api/v3` (Binance-compatible) on bad input: Binance's error codes, never a 5xx, nothing placed.
(ccxt itself drives the happy paths in tests/e2e/test_ccxt.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.api_helpers import bearer, embedded, signup
from tests.support.binance import signed


async def keyed(client: AsyncTestClient[Any]) -> tuple[dict[str, str], str, str]:
    h = bearer((await signup(client, "bin@example.com"))["token"])
    created = (await client.post("/api/v1/apikeys", json={"label": "bot"}, headers=h)).json()
    return h, created["apiKey"], created["secret"]


async def test_public_routes_refuse_bad_parameters_with_binance_codes(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        cases = [
            ("/api/v3/depth", {}, -1102),
            ("/api/v3/depth", {"symbol": "DOGEUSDC"}, -1121),
            ("/api/v3/depth", {"symbol": "BTCUSDC", "limit": "lots"}, -1100),
            ("/api/v3/depth", {"symbol": "BTCUSDC", "limit": "99999999999999999999999"}, -1100),
            ("/api/v3/klines", {"symbol": "BTCUSDC", "interval": "7m"}, -1120),
            ("/api/v3/trades", {"symbol": "BTCUSDC", "limit": "0"}, -1100),
        ]
        for path, params, code in cases:
            r = await client.get(path, params=params)
            assert r.status_code == 400 and r.json()["code"] == code, (path, params, r.text)
        ok = await client.get("/api/v3/depth", params={"symbol": "btcusdc", "limit": 5})
        assert ok.status_code == 200 and ok.json()["bids"] == []
        assert (await client.get("/api/v3/time")).json()["serverTime"] > 0


async def test_signed_routes_check_key_timestamp_and_signature(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        _, key, secret = await keyed(client)
        hk = {"X-MBX-APIKEY": key}
        r = await client.get("/api/v3/account?" + signed(secret))
        assert r.status_code == 401 and r.json()["code"] == -2014  # no key header
        r = await client.get("/api/v3/account?" + signed(secret), headers={"X-MBX-APIKEY": "x" * 65})
        assert r.status_code == 401 and r.json()["code"] == -2015
        r = await client.get("/api/v3/account?" + signed("wrong"), headers=hk)
        assert r.status_code == 400 and r.json()["code"] == -1022
        r = await client.get("/api/v3/account?" + signed(secret, timestamp=1), headers=hk)
        assert r.json()["code"] == -1021
        r = await client.get("/api/v3/account?" + signed(secret, recvWindow=70_000), headers=hk)
        assert r.json()["code"] == -1100
        r = await client.get("/api/v3/account", headers=hk)
        assert r.json()["code"] == -1102  # no timestamp
        r = await client.get("/api/v3/account?" + signed(secret), headers=hk)
        assert r.status_code == 200 and r.json()["accountType"] == "SPOT"
        # The body is signed too (query string first, then the body).
        body = signed(
            secret,
            symbol="BTCUSDC",
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.01",
            price="1000",
        )
        r = await client.post(
            "/api/v3/order", content=body, headers={**hk, "Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "NEW" and r.json()["fills"] == []
        tampered = body.replace("price=1000", "price=1001")
        r = await client.post(
            "/api/v3/order",
            content=tampered,
            headers={**hk, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.json()["code"] == -1022


async def test_order_errors_map_to_binance_codes_and_place_nothing(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        _, key, secret = await keyed(client)
        hk = {"X-MBX-APIKEY": key}
        base = {"symbol": "BTCUSDC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        cases = [
            ({**base, "quantity": "1", "price": "100000"}, -2010),  # insufficient balance
            ({**base, "quantity": "0.00001", "price": "1000"}, -1111),  # off the lot
            ({**base, "quantity": "0.001", "price": "1000.001"}, -1111),  # off the tick
            ({**base, "quantity": "0.001"}, -1102),  # no price
            ({**base, "type": "STOP_LOSS", "quantity": "0.001", "price": "1000"}, -1116),
            ({**base, "timeInForce": "GTX", "quantity": "0.001", "price": "1000"}, -1115),
            ({**base, "quantity": "0.0001", "price": "1"}, -1013),  # below min notional
            ({**base, "symbol": "NOPE", "quantity": "1", "price": "1"}, -1121),
        ]
        for params, code in cases:
            r = await client.post("/api/v3/order?" + signed(secret, **params), headers=hk)
            assert r.status_code == 400 and r.json()["code"] == code, (params, r.text)
        r = await client.delete("/api/v3/order?" + signed(secret, symbol="BTCUSDC", orderId=42), headers=hk)
        assert r.json()["code"] == -2011
        r = await client.get("/api/v3/order?" + signed(secret, symbol="BTCUSDC", orderId=42), headers=hk)
        assert r.json()["code"] == -2013
        r = await client.get("/api/v3/openOrders?" + signed(secret), headers=hk)
        assert r.status_code == 200 and r.json() == []

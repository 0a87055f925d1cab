"""Black-box: ccxt's own `binance` class, pointed at `cashmarkets serve`, trades through `/api/v3`
with an API key made over `/api/v1/apikeys` (HMAC-signed requests, Binance's error codes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

from tests.e2e.processes import Proc, free_port, wait_ready

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        {
            "CASHMARKETS_PRICE_SOURCE": "none",
            "CASHMARKETS_SPOT_BOT": "0",
            "CASHMARKETS_FAUCET_DAILY_MAX": "USDC=1000000,BTC=1000",  # traders fund 3 BTC each
        },
        tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base)
        yield base
    finally:
        proc.stop()


def binance(base: str, api_key: str, secret: str) -> Any:
    """ccxt's binance class on our server, spot only (no margin, currency or futures calls)."""
    exchange = ccxt.binance(
        {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": ["spot"],
                "fetchMargins": False,
                "fetchCurrencies": False,
                "createMarketBuyOrderRequiresPrice": False,
                "defaultType": "spot",
            },
        }
    )
    exchange.urls["api"]["public"] = f"{base}/api/v3"
    exchange.urls["api"]["private"] = f"{base}/api/v3"
    return exchange


def trader(base: str, email: str) -> tuple[dict[str, str], Any]:
    """A funded user, its bearer header and a ccxt client with a fresh API key."""
    with httpx.Client(base_url=base, timeout=10) as http:
        token = http.post("/api/v1/signup", json={"email": email, "password": PASSWORD}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        for asset, amount in (("BTC", "3"), ("USDC", "10000")):
            assert (
                http.post("/api/v1/faucet", json={"asset": asset, "amount": amount}, headers=h).status_code
                == 200
            )
        key = http.post("/api/v1/apikeys", json={"label": "ccxt"}, headers=h)
        assert key.status_code == 201, key.text
    exchange = binance(base, key.json()["apiKey"], key.json()["secret"])
    return h, exchange


def eventually(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = fetch()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_ccxt_binance_trades_through_the_compatible_api(server: str) -> None:
    _, maker = trader(server, "maker@example.com")
    _, taker = trader(server, "taker@example.com")

    markets = taker.load_markets()
    assert {"BTC/USDC", "ETH/USDC", "SOL/USDC"} <= set(markets)
    btc = markets["BTC/USDC"]
    assert btc["id"] == "BTCUSDC" and btc["spot"] and btc["precision"]["price"] == 0.01

    resting = maker.create_order("BTC/USDC", "limit", "sell", 0.5, 65000)
    assert resting["status"] == "open" and resting["clientOrderId"].startswith("x-")  # ccxt's broker prefix
    book = taker.fetch_order_book("BTC/USDC")
    assert book["asks"][0][:2] == [65000.0, 0.5] and book["bids"] == []

    bought = taker.create_order("BTC/USDC", "limit", "buy", 0.1, 65100)
    assert bought["status"] == "closed" and bought["filled"] == 0.1 and bought["average"] == 65000.0
    assert bought["fee"]["currency"] == "BTC" and bought["fee"]["cost"] == pytest.approx(0.0001)
    market_buy = taker.create_order("BTC/USDC", "market", "buy", 0.05)
    assert market_buy["filled"] == 0.05

    fetched = maker.fetch_order(resting["id"], "BTC/USDC")
    assert fetched["status"] == "open" and fetched["filled"] == pytest.approx(0.15)
    assert [o["id"] for o in maker.fetch_open_orders("BTC/USDC")] == [resting["id"]]
    cancelled = maker.cancel_order(resting["id"], "BTC/USDC")
    assert cancelled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        maker.cancel_order(resting["id"], "BTC/USDC")
    assert maker.fetch_open_orders("BTC/USDC") == []

    # Trades, candles and the ticker are read from the projection: it may be a batch behind.
    trades = eventually(lambda: taker.fetch_my_trades("BTC/USDC"), lambda got: len(got) == 2)
    assert [(t["side"], t["amount"], t["price"], t["takerOrMaker"]) for t in trades] == [
        ("buy", 0.1, 65000.0, "taker"),
        ("buy", 0.05, 65000.0, "taker"),
    ]
    balance = taker.fetch_balance()
    # 3 BTC + 0.15 bought - 0.00015 taker fee; 15,000 USDC (5,000 at signup) - 9,750 paid.
    assert balance["BTC"]["total"] == pytest.approx(3.14985)
    assert balance["USDC"]["free"] == pytest.approx(5250.0)
    maker_balance = maker.fetch_balance()
    assert maker_balance["BTC"]["used"] == 0 and maker_balance["BTC"]["total"] == pytest.approx(2.85)

    ticker = eventually(lambda: taker.fetch_ticker("BTC/USDC"), lambda got: got["last"] is not None)
    assert ticker["last"] == 65000.0 and ticker["baseVolume"] == pytest.approx(0.15)
    candles = eventually(lambda: taker.fetch_ohlcv("BTC/USDC", "1m"), lambda got: bool(got))
    assert len(candles) == 1 and candles[0][1:6] == [65000.0, 65000.0, 65000.0, 65000.0, pytest.approx(0.15)]

    with pytest.raises(ccxt.InsufficientFunds):
        taker.create_order("BTC/USDC", "limit", "buy", 10, 65000)
    with pytest.raises(ccxt.BadSymbol):
        taker.fetch_order_book("DOGE/USDC")
    bad = binance(server, "nope", "nope")
    with pytest.raises(ccxt.AuthenticationError):
        bad.fetch_balance()


def test_signatures_timestamps_and_key_revocation(server: str) -> None:
    h, exchange = trader(server, "signer@example.com")
    assert "USDC" in exchange.fetch_balance()
    wrong_secret = binance(server, exchange.apiKey, "x" * 64)
    with pytest.raises(ccxt.AuthenticationError):
        wrong_secret.fetch_balance()
    # A timestamp far in the past is refused (-1021).
    with httpx.Client(base_url=server, timeout=10) as http:
        r = http.get(
            "/api/v3/account",
            params={"timestamp": 1, "signature": "00"},
            headers={"X-MBX-APIKEY": exchange.apiKey},
        )
        assert r.status_code == 400 and r.json()["code"] == -1021
        keys = http.get("/api/v1/apikeys", headers=h).json()["keys"]
        assert [k["apiKey"] for k in keys] == [exchange.apiKey] and "secret" not in keys[0]
        assert http.delete(f"/api/v1/apikeys/{exchange.apiKey}", headers=h).status_code == 204
    # A fresh client with the revoked key (ccxt reads -2015 after a success as a temporary ban).
    with pytest.raises(ccxt.AuthenticationError):
        binance(server, exchange.apiKey, exchange.secret).fetch_balance()

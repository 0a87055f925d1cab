"""Client stories shared by the embedded and the distributed black-box tests."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx


def eventually(fetch: Any, check: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def account_flow(a: httpx.Client, b: httpx.Client) -> None:
    """Sign up, fund, replay an idempotent request through the other client, withdraw, read the
    history: the same story whether a and b are one embedded server or two API processes."""
    signup = a.post("/api/v1/signup", json={"email": "dist@example.com", "password": "correct horse battery"})
    assert signup.status_code == 201, signup.text
    h = {"Authorization": f"Bearer {signup.json()['token']}"}
    # A token from one API process works on the other; the engine's answer carries the balance.
    faucet = b.post(
        "/api/v1/faucet", json={"asset": "USDC", "amount": "12.5"}, headers={**h, "Idempotency-Key": "k1"}
    )
    assert faucet.status_code == 200, faucet.text
    assert faucet.json()["balance"]["balance"] == "5012.500000"
    # The same key through the other process replays the stored answer: one ledger effect.
    again = a.post(
        "/api/v1/faucet", json={"asset": "USDC", "amount": "12.5"}, headers={**h, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
    assert again.json() == faucet.json()
    # Balances come from the projection: they converge.
    balance = eventually(
        lambda: a.get("/api/v1/balance", headers=h).json(),
        lambda body: body.get("balances") and body["balances"][0]["balance"] == "5012.500000",
    )
    assert balance["balances"][0]["balance"] == "5012.500000", balance
    outcome = a.get("/api/v1/commands/k1", params={"route": "/api/v1/faucet"}, headers=h)
    assert outcome.status_code == 200 and outcome.json()["status"] == "accepted"
    withdrawal = a.post(
        "/api/v1/withdrawals", json={"asset": "USDC", "amount": "10", "destination": "0xabc"}, headers=h
    )
    assert withdrawal.status_code == 202
    history = eventually(
        lambda: b.get("/api/v1/ledger", headers=h).json(),
        lambda body: len(body.get("items", [])) == 3,
    )
    assert [item["code"] for item in history["items"]] == ["withdrawal", "faucet", "faucet"]
    rejected = b.post(
        "/api/v1/withdrawals", json={"asset": "USDC", "amount": "999999", "destination": "x"}, headers=h
    )
    assert rejected.status_code == 422 and rejected.json()["code"] == "insufficient_funds"


# ---- trading (product leverage) ----------------------------------------------------------------

USDC = 1_000_000  # minor units per USDC
CENT = 10_000  # USDC minor units per cent


def _pnl(side: str, margin_cents: int, leverage: int, entry: int, exit_price: int) -> int:
    """PnL in USDC minor units, by hand: direction x notional x (exit - entry) / entry, floored."""
    notional = margin_cents * CENT * leverage
    direction = 1 if side == "long" else -1
    return direction * notional * (exit_price - entry) // entry


def trade_flow(a: httpx.Client, b: httpx.Client, quote: Any) -> None:
    """Sign up, trade on prices the test publishes on a Backpack-protocol server, and check every
    figure by hand: open/close PnL, double close, liquidation, take-profit. `quote(symbol, bid,
    ask)` publishes a book ticker. Reads that come from the projection (distributed) converge."""
    from tests.fakes.backpack import BTC_STREAM, ETH_STREAM

    streams = {"BTC": BTC_STREAM, "ETH": ETH_STREAM}

    def price(symbol: str, bid: str, ask: str) -> None:
        quote(streams[symbol], bid, ask)
        seen = eventually(
            lambda: {p["symbol"]: p for p in a.get("/api/v1/prices").json()["prices"]},
            lambda prices: symbol in prices and (prices[symbol]["bid"], prices[symbol]["ask"]) == (bid, ask),
        )
        assert (seen[symbol]["bid"], seen[symbol]["ask"], seen[symbol]["stale"]) == (bid, ask, False)

    signup = a.post(
        "/api/v1/signup", json={"email": "trader@example.com", "password": "correct horse battery"}
    )
    assert signup.status_code == 201, signup.text
    h = {"Authorization": f"Bearer {signup.json()['token']}"}
    a.cookies.clear()
    balance_minor = 5_000 * USDC  # the demo balance

    def usd_converges_to(minor: int) -> None:
        got = eventually(
            lambda: a.get("/api/v1/balance/usd", headers=h).json(), lambda r: r == {"balance": minor // CENT}
        )
        assert got == {"balance": minor // CENT}

    # Open a long at the ask, the price moves, close at the bid: PnL by hand.
    price("BTC", "65000.00", "65001.00")
    opened = a.post(
        "/api/v1/trade/create",
        json={
            "asset": "BTC",
            "type": "long",
            "margin": 10_000,
            "leverage": 10,
            "slippage": 50,
            "price": "65001.00",
        },
        headers=h,
    )
    assert opened.status_code == 200, opened.text
    order = opened.json()
    assert (order["openPrice"], order["margin"], order["status"]) == ("65001.00", 10_000, "open")
    balance_minor -= 10_000 * CENT
    usd_converges_to(balance_minor)
    listed = eventually(
        lambda: b.get("/api/v1/trades/open", headers=h).json()["trades"], lambda t: len(t) == 1
    )
    assert [t["orderId"] for t in listed] == [order["orderId"]]
    price("BTC", "65650.00", "65651.00")
    closed = b.post("/api/v1/trade/close", json={"orderId": order["orderId"]}, headers=h)
    assert closed.status_code == 200, closed.text
    pnl = _pnl("long", 10_000, 10, 6_500_100, 6_565_000)
    assert (closed.json()["closePrice"], closed.json()["closeReason"]) == ("65650.00", "user")
    assert closed.json()["pnl"] == pnl // CENT
    balance_minor += 10_000 * CENT + pnl
    usd_converges_to(balance_minor)

    # Two clients close the same trade at once: exactly one succeeds.
    price("ETH", "2500.00", "2500.50")
    twin = a.post(
        "/api/v1/trade/create",
        json={"asset": "ETH", "type": "short", "margin": 5_000, "leverage": 2},
        headers=h,
    ).json()
    assert twin["openPrice"] == "2500.00", twin
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda client: client.post(
                    "/api/v1/trade/close", json={"orderId": twin["orderId"]}, headers=h
                ),
                (a, b),
            )
        )
    assert sorted(r.status_code for r in answers) == [200, 404], [r.text for r in answers]
    won = next(r for r in answers if r.status_code == 200).json()
    assert won["closePrice"] == "2500.50" and won["pnl"] == _pnl("short", 5_000, 2, 250_000, 250_050) // CENT
    balance_minor += _pnl("short", 5_000, 2, 250_000, 250_050)

    # A short at 50x is liquidated by the first tick whose ask reaches its liquidation price.
    doomed = a.post(
        "/api/v1/trade/create",
        json={"asset": "BTC", "type": "short", "margin": 2_000, "leverage": 50},
        headers=h,
    ).json()
    liq = doomed["liquidationPrice"]
    assert doomed["openPrice"] == "65650.00" and Decimal(liq) > Decimal("65650.00"), doomed
    balance_minor -= 2_000 * CENT
    # One cent short of it: still open (its close price below proves it was not closed here).
    price("BTC", "65650.00", f"{Decimal(liq) - Decimal('0.01'):.2f}")
    price("BTC", "65700.00", liq)

    # A long with a take-profit closes on the tick that reaches it, at that tick's bid.
    tp = a.post(
        "/api/v1/trade/create",
        json={"asset": "ETH", "type": "long", "margin": 3_000, "leverage": 5, "takeProfit": "2600"},
        headers=h,
    ).json()
    assert tp["takeProfit"] == "2600.00" and tp["openPrice"] == "2500.50", tp
    balance_minor -= 3_000 * CENT
    price("ETH", "2599.99", "2600.10")  # the bid has not reached it
    price("ETH", "2600.20", "2600.40")
    tp_pnl = _pnl("long", 3_000, 5, 250_050, 260_020)
    balance_minor += 3_000 * CENT + tp_pnl

    history = eventually(
        lambda: a.get("/api/v1/trades", params={"status": "closed"}, headers=h).json()["trades"],
        lambda trades: len(trades) == 4,
    )
    by_id = {t["orderId"]: t for t in history}
    assert (by_id[doomed["orderId"]]["closeReason"], by_id[doomed["orderId"]]["closePrice"]) == (
        "liquidation",
        liq,
    )
    assert by_id[doomed["orderId"]]["pnl"] == -2_000  # the whole margin, no more
    assert (by_id[tp["orderId"]]["closeReason"], by_id[tp["orderId"]]["closePrice"]) == (
        "take_profit",
        "2600.20",
    )
    assert by_id[tp["orderId"]]["pnl"] == tp_pnl // CENT
    assert a.get("/api/v1/trades/open", headers=h).json()["trades"] == []
    usd_converges_to(balance_minor)

"""The crash story of the trading product, shared by both modes: `CLIENTS` clients create and
close `TRADES` trades over HTTP while the test SIGKILLs the engine (twice) and restarts it. Every
request carries an Idempotency-Key and is retried with it until it gets a definitive answer, as a
careful client does. Afterwards:

- every acknowledged open exists, once, with the acknowledged terms; every acknowledged close is
  closed at the acknowledged price and PnL; nothing else exists (exactly once, not at least once);
- each user's balance equals what the test computes by hand from the trades' prices;
- the books reconcile: sum of user balances + margins held + house = deposits, with the user
  balances and margins taken from the API and the deposits known to the test.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from tests.e2e.flows import CENT, USDC, eventually

CLIENTS = 16
TRADES = 1_000
KILL_AT = (0.3, 0.65)  # fractions of the acknowledged operations at which the engine is killed
PRICE_DECIMALS = {"BTC": 2, "ETH": 2, "SOL": 4}
DEMO_BALANCE = 5_000 * USDC
RETRY_FOR_S = 90.0

# Knobs for the servers under test: no rate limit in the way of 16 clients on one IP, short
# timeouts so requests caught by the kill come back quickly and are retried.
CRASH_ENV = {
    "CASHMARKETS_RATE_LIMIT_IP_PER_S": "100000",
    "CASHMARKETS_RATE_LIMIT_IP_BURST": "100000",
    "CASHMARKETS_RATE_LIMIT_USER_PER_S": "100000",
    "CASHMARKETS_RATE_LIMIT_USER_BURST": "100000",
    "CASHMARKETS_COMMAND_TIMEOUT_S": "2",
    "CASHMARKETS_IDEMPOTENCY_LEASE_S": "3",
    "CASHMARKETS_SNAPSHOT_INTERVAL_S": "1",
}


def ticks(price: str, asset: str) -> int:
    return int(Decimal(price).scaleb(PRICE_DECIMALS[asset]))


def realized_by_hand(trade: dict[str, Any]) -> int:
    """payout - margin in USDC minor units, from the trade's prices (never from its pnl field)."""
    margin = trade["margin"] * CENT
    if trade["closeReason"] == "liquidation":
        return -margin
    entry, exit_price = ticks(trade["openPrice"], trade["asset"]), ticks(trade["closePrice"], trade["asset"])
    direction = 1 if trade["type"] == "long" else -1
    pnl = direction * margin * trade["leverage"] * (exit_price - entry) // entry
    return max(0, margin + pnl) - margin


class Progress:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.retries = 0

    def ack(self) -> None:
        with self.lock:
            self.acked += 1

    def retry(self) -> None:
        with self.lock:
            self.retries += 1


@dataclass
class Trader:
    index: int
    url: str
    token: str
    trades: int
    progress: Progress
    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[int, dict[str, Any]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)  # closed by a trigger before our close
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, with the trader's index
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(self.index)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for i in range(self.trades):
                body = {
                    "asset": rng.choice(("BTC", "ETH", "SOL")),
                    "type": rng.choice(("long", "short")),
                    "margin": rng.randint(100, 5_000),
                    "leverage": rng.randint(1, 5),
                }
                opened = self.post(client, "/api/v1/trade/create", body, f"t{self.index}-{i}-open")
                assert opened.status_code == 200, (body, opened.text)
                trade = opened.json()
                self.opened.append(trade)
                self.progress.ack()
                closed = self.post(
                    client, "/api/v1/trade/close", {"orderId": trade["orderId"]}, f"t{self.index}-{i}-close"
                )
                if closed.status_code == 404:
                    self.gone.add(trade["orderId"])
                else:
                    assert closed.status_code == 200, closed.text
                    self.closed[trade["orderId"]] = closed.json()
                self.progress.ack()

    def post(self, client: httpx.Client, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        """Until a definitive answer: a lost connection, a 5xx or a key still held by a request
        that died are retried with the same key."""
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                response = client.post(path, json=body, headers=headers)
                retry = response.status_code >= 500 or (
                    response.status_code == 409 and response.json().get("code") == "idempotency_key_in_use"
                )
                if not retry:
                    return response
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{path} {key}: no definitive answer in {RETRY_FOR_S} s"
            self.progress.retry()
            time.sleep(0.05)


def sign_up(url: str, n: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=15) as client:
        tokens = []
        for i in range(n):
            r = client.post(
                "/api/v1/signup", json={"email": f"crash{i}@example.com", "password": "correct horse battery"}
            )
            assert r.status_code == 201, r.text
            tokens.append(r.json()["token"])
            client.cookies.clear()
    return tokens


def all_trades(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"status": "closed", "limit": "100", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/trades", params=params, headers=headers).json()
        out.extend(page["trades"])
        cursor = page.get("nextCursor")
        if not cursor:
            return out


def run_crash_story(
    urls: list[str],
    kill_and_restart: Callable[[], None],
    reconcile_cmd: tuple[list[str], dict[str, str]],
) -> dict[str, Any]:
    """Trade, kill, verify. Returns figures for the test's report."""
    tokens = sign_up(urls[0], CLIENTS)
    progress = Progress()
    traders = [
        Trader(i, urls[i % len(urls)], tokens[i], TRADES // CLIENTS + (i < TRADES % CLIENTS), progress)
        for i in range(CLIENTS)
    ]
    assert sum(t.trades for t in traders) == TRADES
    threads = [threading.Thread(target=t.run, name=f"trader-{t.index}") for t in traders]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    kills = 0
    for fraction in KILL_AT:
        while progress.acked < fraction * 2 * TRADES and any(th.is_alive() for th in threads):
            time.sleep(0.01)
        assert any(th.is_alive() for th in threads), "the clients finished before the kill"
        kill_and_restart()
        kills += 1
    for thread in threads:
        thread.join(RETRY_FOR_S * 2)
        assert not thread.is_alive()
    elapsed_s = time.monotonic() - started
    errors = [(t.index, t.error) for t in traders if t.error is not None]
    assert not errors, errors

    client = httpx.Client(base_url=urls[0], timeout=15)
    users_total = 0
    margins_open = 0
    for trader in traders:
        h = {"Authorization": f"Bearer {trader.token}"}
        acked = {t["orderId"]: t for t in trader.opened}
        assert len(acked) == trader.trades  # one distinct order per acknowledged open
        history = eventually(
            lambda h=h: all_trades(client, h), lambda got, n=trader.trades: len(got) >= n, 60
        )
        by_id = {t["orderId"]: t for t in history}
        # Exactly once: the trades that exist are the acknowledged ones, no more, no fewer.
        assert sorted(by_id) == sorted(acked) and len(history) == len(by_id), trader.index
        still_open = client.get("/api/v1/trades/open", headers=h).json()["trades"]
        assert still_open == []  # every trade was closed (by its client or a trigger)
        for order_id, opened in acked.items():
            stored = by_id[order_id]
            for name in ("asset", "type", "margin", "leverage", "openPrice", "liquidationPrice"):
                assert stored[name] == opened[name], (order_id, name, stored, opened)
            if order_id in trader.closed:
                ack = trader.closed[order_id]
                assert (stored["closeReason"], stored["closePrice"], stored["pnl"]) == (
                    "user",
                    ack["closePrice"],
                    ack["pnl"],
                ), (order_id, stored, ack)
            else:
                assert order_id in trader.gone and stored["closeReason"] != "user", stored
        expected = DEMO_BALANCE + sum(realized_by_hand(t) for t in history)
        balances = client.get("/api/v1/balance", headers=h).json()["balances"]
        usdc = next(b for b in balances if b["asset"] == "USDC")
        assert int(Decimal(usdc["balance"]).scaleb(6)) == expected, (trader.index, usdc, expected)
        assert client.get("/api/v1/balance/usd", headers=h).json() == {"balance": expected // CENT}
        users_total += expected
        margins_open += sum(t["margin"] * CENT for t in still_open)

    args, env = reconcile_cmd
    done = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "reconcile", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    (usdc_totals,) = [a for a in report["assets"] if a["asset"] == "USDC"]
    deposits = CLIENTS * DEMO_BALANCE
    assert usdc_totals["deposits"] == deposits
    assert usdc_totals["users"] == users_total
    assert usdc_totals["escrows"].get("@escrow:leverage", 0) == margins_open == 0
    # The spec's sentence: user balances + margins held + house = deposits.
    assert users_total + margins_open + usdc_totals["house"] == deposits
    return {
        "trades": TRADES,
        "clients": CLIENTS,
        "kills": kills,
        "retries": progress.retries,
        "elapsed_s": round(elapsed_s, 1),
        "closed_by_trigger": sum(len(t.gone) for t in traders),
    }

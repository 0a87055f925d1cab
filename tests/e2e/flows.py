"""Client stories shared by the embedded and the distributed black-box tests."""

from __future__ import annotations

import time
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
    outcome = a.get("/api/v1/commands/k1", headers=h)
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

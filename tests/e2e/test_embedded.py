"""Black-box, embedded mode: `cashmarkets serve` as a subprocess, driven over HTTP."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import account_flow, eventually, trade_flow
from tests.e2e.processes import Proc, free_port, wait_ready
from tests.fakes.backpack import ThreadedBackpack


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Proc, Path]]:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = Proc(["serve", "--data-dir", str(data_dir), "--port", str(port)], {}, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield url, proc, data_dir
    finally:
        proc.stop()


def test_account_story_over_http(server: tuple[str, Proc, Path]) -> None:
    url, _, _ = server
    with httpx.Client(base_url=url, timeout=15) as a, httpx.Client(base_url=url, timeout=15) as b:
        account_flow(a, b)


def test_state_survives_a_sigkill_of_the_server(server: tuple[str, Proc, Path], tmp_path: Path) -> None:
    url, proc, data_dir = server
    with httpx.Client(base_url=url, timeout=15) as client:
        token = client.post(
            "/api/v1/signup", json={"email": "k@example.com", "password": "correct horse battery"}
        ).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        for _ in range(10):
            assert (
                client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=h).status_code
                == 200
            )
    proc.stop(sig=signal.SIGKILL)
    port = int(url.rsplit(":", 1)[1])
    again = Proc(["serve", "--data-dir", str(data_dir), "--port", str(port)], {}, tmp_path / "serve2.log")
    try:
        wait_ready(again, url)
        with httpx.Client(base_url=url, timeout=15) as client:
            # The same token works after the restart (the JWT secret lives in the data directory).
            balance = client.get("/api/v1/balance", headers=h).json()["balances"][0]["balance"]
            assert balance == "5010.000000"
    finally:
        again.stop()


def test_a_retry_right_after_the_answer_is_a_replay_never_in_progress(server: tuple[str, Proc, Path]) -> None:
    """Over real HTTP the answer reaches the client at once: it must already be stored by then."""
    url, _, _ = server
    with httpx.Client(base_url=url, timeout=15) as client:
        token = client.post(
            "/api/v1/signup", json={"email": "r@example.com", "password": "correct horse battery"}
        ).json()["token"]
        client.cookies.clear()
        h = {"Authorization": f"Bearer {token}"}
        for i in range(15):
            headers = {**h, "Idempotency-Key": f"race-{i}"}
            first = client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=headers)
            again = client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=headers)
            assert first.status_code == 200, first.text
            assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.text
        balance = client.get("/api/v1/balance", headers=h).json()["balances"][0]["balance"]
        assert balance == "5015.000000"


def test_serve_shows_moving_prices_and_trades_on_them(server: tuple[str, Proc, Path]) -> None:
    """`make run` experience: the synthetic feed moves BTC/ETH/SOL; a user trades on it."""
    url, _, _ = server
    with httpx.Client(base_url=url, timeout=15) as client:
        first = eventually(
            lambda: client.get("/api/v1/prices").json()["prices"], lambda prices: len(prices) == 3
        )
        assert [p["symbol"] for p in first] == ["BTC", "ETH", "SOL"]
        later = eventually(
            lambda: client.get("/api/v1/prices").json()["prices"],
            lambda prices: [p["updateId"] for p in prices] != [p["updateId"] for p in first],
        )
        assert [p["updateId"] for p in later] != [p["updateId"] for p in first]
        token = client.post(
            "/api/v1/signup", json={"email": "t@example.com", "password": "correct horse battery"}
        ).json()["token"]
        client.cookies.clear()
        h = {"Authorization": f"Bearer {token}"}
        trade = client.post(
            "/api/v1/trade/create",
            json={"asset": "ETH", "type": "short", "margin": 1_000, "leverage": 3},
            headers=h,
        )
        assert trade.status_code == 200, trade.text
        closed = client.post("/api/v1/trade/close", json={"orderId": trade.json()["orderId"]}, headers=h)
        assert closed.status_code == 200, closed.text
        usd = client.get("/api/v1/balance/usd", headers=h).json()["balance"]
        assert usd == 500_000 + closed.json()["pnl"]


def test_trading_on_backpack_prices_over_http(tmp_path: Path) -> None:
    """The in-process poller on a local Backpack-protocol server; prices scripted by the test."""
    port = free_port()
    with ThreadedBackpack() as backpack:
        env = {
            "CASHMARKETS_PRICE_SOURCE": "backpack",
            "CASHMARKETS_BACKPACK_URL": backpack.url,
            "CASHMARKETS_PRICE_INTERVAL_MS": "0",
        }
        proc = Proc(
            ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)], env, tmp_path / "serve.log"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, url)
            backpack.wait_subscribed()
            with httpx.Client(base_url=url, timeout=15) as a, httpx.Client(base_url=url, timeout=15) as b:
                trade_flow(a, b, backpack.quote)
        finally:
            proc.stop()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_the_projector_child_is_restarted_after_a_kill_and_catches_up(server: tuple[str, Proc, Path]) -> None:
    url, proc, _ = server
    (projector,) = _children(proc.proc.pid)  # serve's one child: its projector
    with httpx.Client(base_url=url, timeout=15) as client:
        token = client.post(
            "/api/v1/signup", json={"email": "p@example.com", "password": "correct horse battery"}
        ).json()["token"]
        client.cookies.clear()
        h = {"Authorization": f"Bearer {token}"}
        os.kill(projector, signal.SIGKILL)
        for _ in range(5):
            r = client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=h)
            assert r.status_code == 200  # trading and funding do not wait for the projection
        history = eventually(
            lambda: client.get("/api/v1/ledger", headers=h).json()["items"],
            lambda items: len(items) == 6,  # the demo deposit and five faucet credits
            timeout_s=30,
        )
        assert [i["code"] for i in history] == ["faucet"] * 6
        restarted = _children(proc.proc.pid)
        assert len(restarted) == 1 and restarted != [projector]
        assert client.get("/ready").status_code == 200

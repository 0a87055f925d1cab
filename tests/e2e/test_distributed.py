"""Black-box, distributed mode: PostgreSQL + Redis, with `cashmarkets engine`, `cashmarkets
projector` and two `cashmarkets api` processes, driven over HTTP like a client would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import account_flow, eventually, trade_flow
from tests.e2e.processes import Cluster, Proc, distributed_cluster
from tests.fakes.backpack import ThreadedBackpack

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    with distributed_cluster(tmp_path, pg_url) as running:
        yield running


def test_two_api_processes_one_engine_through_redis(cluster: Cluster) -> None:
    a, b = (httpx.Client(base_url=url, timeout=15) for url in cluster.urls)
    account_flow(a, b)


def test_engine_restart_recovers_and_keeps_serving(cluster: Cluster) -> None:
    a = httpx.Client(base_url=cluster.urls[0], timeout=15)
    signup = a.post(
        "/api/v1/signup", json={"email": "restart@example.com", "password": "correct horse battery"}
    )
    h = {"Authorization": f"Bearer {signup.json()['token']}"}
    for i in range(20):
        assert (
            a.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=h).status_code == 200
        ), i
    time.sleep(1.0)  # let a snapshot land in PostgreSQL
    cluster.restart("engine", ["engine"])  # SIGKILL, then a new engine process
    after = eventually(
        lambda: a.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": "after"}
        ),
        lambda r: r.status_code == 200,
        timeout_s=30,
    )
    assert after.status_code == 200, after.text
    assert after.json()["balance"]["balance"] == "5021.000000"


def test_trading_with_the_poller_process_on_backpack_prices(cluster: Cluster) -> None:
    """`cashmarkets poller` on a local Backpack-protocol server feeds the engine through Redis."""
    with ThreadedBackpack() as backpack:
        env = {
            **cluster.env,
            "CASHMARKETS_PRICE_SOURCE": "backpack",
            "CASHMARKETS_BACKPACK_URL": backpack.url,
            "CASHMARKETS_PRICE_INTERVAL_MS": "0",
        }
        poller = Proc(["poller"], env, cluster.tmp / "poller.log")
        cluster.procs["poller"] = poller
        backpack.wait_subscribed()
        a, b = (httpx.Client(base_url=url, timeout=15) for url in cluster.urls)
        trade_flow(a, b, backpack.quote)
        assert poller.stop() == 0, poller.output()

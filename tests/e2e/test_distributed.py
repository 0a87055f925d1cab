"""Black-box, distributed mode: PostgreSQL + Redis, with `cashmarkets engine`, `cashmarkets
projector` and two `cashmarkets api` processes, driven over HTTP like a client would."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.flows import account_flow, eventually, trade_flow
from tests.e2e.processes import Proc, free_port, wait_ready
from tests.fakes.backpack import ThreadedBackpack

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[dict[str, Any]]:
    stream = f"cashmarkets:test:{uuid.uuid4().hex}"
    env = {
        "CASHMARKETS_DATABASE_URL": pg_url,
        "CASHMARKETS_REDIS_URL": REDIS_URL,
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_JWT_SECRET": "test-secret-" + "x" * 40,
        "CASHMARKETS_FAUCET": "true",
        "CASHMARKETS_DATA_DIR": str(tmp_path / "engine"),
        "CASHMARKETS_SNAPSHOT_INTERVAL_S": "0.5",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "migrate"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    procs: dict[str, Proc] = {}
    ports = [free_port(), free_port()]
    try:
        procs["engine"] = Proc(["engine"], env, tmp_path / "engine.log")
        procs["projector"] = Proc(["projector"], env, tmp_path / "projector.log")
        for i, port in enumerate(ports):
            procs[f"api{i}"] = Proc(["api", "--port", str(port)], env, tmp_path / f"api{i}.log")
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i, url in enumerate(urls):
            wait_ready(procs[f"api{i}"], url)
        yield {"urls": urls, "procs": procs, "env": env, "tmp": tmp_path}
    finally:
        for proc in procs.values():
            proc.stop()
        redis.Redis.from_url(REDIS_URL).delete(stream)


def test_two_api_processes_one_engine_through_redis(cluster: dict[str, Any]) -> None:
    a, b = (httpx.Client(base_url=url, timeout=15) for url in cluster["urls"])
    account_flow(a, b)


def test_engine_restart_recovers_and_keeps_serving(cluster: dict[str, Any]) -> None:
    a = httpx.Client(base_url=cluster["urls"][0], timeout=15)
    signup = a.post(
        "/api/v1/signup", json={"email": "restart@example.com", "password": "correct horse battery"}
    )
    h = {"Authorization": f"Bearer {signup.json()['token']}"}
    for i in range(20):
        assert (
            a.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=h).status_code == 200
        ), i
    time.sleep(1.0)  # let a snapshot land in PostgreSQL
    engine: Proc = cluster["procs"]["engine"]
    engine.stop(sig=9)
    cluster["procs"]["engine"] = Proc(["engine"], cluster["env"], cluster["tmp"] / "engine2.log")
    after = eventually(
        lambda: a.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": "after"}
        ),
        lambda r: r.status_code == 200,
        timeout_s=30,
    )
    assert after.status_code == 200, after.text
    assert after.json()["balance"]["balance"] == "5021.000000"


def test_trading_with_the_poller_process_on_backpack_prices(cluster: dict[str, Any]) -> None:
    """`cashmarkets poller` on a local Backpack-protocol server feeds the engine through Redis."""
    with ThreadedBackpack() as backpack:
        env = {
            **cluster["env"],
            "CASHMARKETS_PRICE_SOURCE": "backpack",
            "CASHMARKETS_BACKPACK_URL": backpack.url,
            "CASHMARKETS_PRICE_INTERVAL_MS": "0",
        }
        poller = Proc(["poller"], env, cluster["tmp"] / "poller.log")
        cluster["procs"]["poller"] = poller
        backpack.wait_subscribed()
        a, b = (httpx.Client(base_url=url, timeout=15) for url in cluster["urls"])
        trade_flow(a, b, backpack.quote)
        assert poller.stop() == 0, poller.output()

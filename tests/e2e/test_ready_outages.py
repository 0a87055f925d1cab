"""Distributed mode under outages, black-box: `/ready` follows every dependency (the store, Redis,
the engine's and the projector's heartbeats) and answers 503, never 500 (the lag limit itself:
tests/integration/test_projection_heartbeat.py and test_ready_embedded.py);
commands and reads refused because Redis or PostgreSQL is down answer 503 `dependency_unavailable`
with Retry-After; an Idempotency-Key whose API process was killed mid-request is free again in
seconds (its claim's lease is no longer renewed), not after the old 30 s.

Its own redis-server (tests/support/private_redis.py), so killing it touches nothing shared; the
API's and the projector's PostgreSQL connections go through TCP proxies that can be cut.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import eventually
from tests.e2e.processes import Proc, free_port, wait_ready
from tests.support.private_pg import TcpProxy
from tests.support.private_redis import PrivateRedis, private_redis

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

READY_MAX_LAG_MS = 1500
PASSWORD = "correct horse battery"


@dataclass
class Stack:
    env: dict[str, str]
    redis: PrivateRedis
    api_store: TcpProxy  # api0's connection to PostgreSQL
    projector_store: TcpProxy
    procs: dict[str, Proc]
    urls: list[str]
    tmp: Path

    def client(self, i: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.urls[i], timeout=15)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        old = self.procs.get(name)
        if old is not None:
            old.stop(sig=signal.SIGKILL)
        log_path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.procs[name] = Proc(args, {**self.env, **(env or {})}, log_path)

    def start_projector(self) -> None:
        through = _through(self.projector_store, self.env)
        self.start("projector", ["projector"], {"CASHMARKETS_DATABASE_URL": through})

    def restart_workers(self) -> None:
        """A new engine and projector after a Redis outage: whether they outlive one is another
        test's business (an old one may linger without its heartbeat)."""
        self.start("engine", ["engine"])
        self.start_projector()


def _through(proxy: TcpProxy, env: dict[str, str]) -> str:
    return env["CASHMARKETS_DATABASE_URL"].replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")


@pytest.fixture
def stack(tmp_path: Path, pg_url: str) -> Iterator[Stack]:
    with private_redis() as redis_server, TcpProxy(5432) as api_store, TcpProxy(5432) as projector_store:
        env = {
            "CASHMARKETS_DATABASE_URL": pg_url,
            "CASHMARKETS_REDIS_URL": redis_server.url(),
            "CASHMARKETS_REDIS_STREAM": f"cashmarkets:test:{uuid.uuid4().hex}",
            "CASHMARKETS_JWT_SECRET": "test-secret-" + "x" * 40,
            "CASHMARKETS_APIKEY_MASTER_KEY": "ab" * 32,
            "CASHMARKETS_BEACON_KEY": "cd" * 32,
            "CASHMARKETS_FAUCET": "true",
            "CASHMARKETS_DATA_DIR": str(tmp_path / "engine"),
            "CASHMARKETS_SNAPSHOT_INTERVAL_S": "0.5",
            "CASHMARKETS_READY_MAX_LAG_MS": str(READY_MAX_LAG_MS),
            "CASHMARKETS_RATE_LIMIT_IP_PER_S": "10000",
            "CASHMARKETS_RATE_LIMIT_IP_BURST": "10000",
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        stack = Stack(env, redis_server, api_store, projector_store, {}, urls, tmp_path)
        try:
            stack.start("engine", ["engine"])
            stack.start_projector()
            api0_env = {"CASHMARKETS_DATABASE_URL": _through(api_store, env)}
            stack.start("api0", ["api", "--port", str(ports[0])], api0_env)
            stack.start("api1", ["api", "--port", str(ports[1])])
            for i, url in enumerate(stack.urls):
                wait_ready(stack.procs[f"api{i}"], url)
            yield stack
        finally:
            for proc in stack.procs.values():
                proc.stop(sig=signal.SIGKILL)


def _signup(client: httpx.Client, email: str) -> dict[str, str]:
    response = client.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _faucet(client: httpx.Client, headers: dict[str, str], key: str | None = None) -> httpx.Response:
    keyed = {**headers, "Idempotency-Key": key} if key else headers
    return client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=keyed)


def _ready(client: httpx.Client, status: int, timeout_s: float = 30) -> httpx.Response:
    found: httpx.Response = eventually(
        lambda: client.get("/ready"), lambda r: r.status_code == status, timeout_s
    )
    return found


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "dependency_unavailable", response.text
    assert 1 <= int(response.headers["retry-after"]) <= 2


def test_ready_follows_the_projector_heartbeat_and_lag(stack: Stack) -> None:
    api = stack.client()
    ready = _ready(api, 200)
    assert ready.json()["checks"] == {"store": "ok", "log": "ok", "engine": "ok", "projector": "ok"}
    headers = _signup(api, "lag@example.com")
    assert _faucet(api, headers).status_code == 200
    read = api.get("/api/v1/balance", headers=headers)
    assert read.status_code == 200 and int(read.headers["x-projection-lag-ms"]) >= 0

    # The projector cut off from its store: it stops projecting (it loses its lease, or exits),
    # and the API stops saying ready while reads would be stale.
    stack.projector_store.cut()
    deadline = time.monotonic() + 30
    while (ready := api.get("/ready")).status_code == 200 and time.monotonic() < deadline:
        assert _faucet(api, headers).status_code == 200  # the engine goes on
        time.sleep(0.2)
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["projector"] != "ok", ready.text
    assert ready.json()["checks"]["store"] == "ok"
    stack.projector_store.heal()
    stack.start_projector()  # (it may be exiting, or stuck without its lease: a new one)
    ready = _ready(api, 200)
    assert ready.status_code == 200, ready.text
    read = api.get("/api/v1/balance", headers=headers)
    assert int(read.headers["x-projection-lag-ms"]) <= READY_MAX_LAG_MS

    # The projector killed: no heartbeat, not ready (within its expiry); ready again once restarted.
    stack.procs["projector"].stop(sig=signal.SIGKILL)
    ready = _ready(api, 503, timeout_s=15)
    assert ready.json()["checks"]["projector"] == "no projector heartbeat", ready.text
    stack.start_projector()
    assert _ready(api, 200).status_code == 200


def test_a_redis_outage_is_503_dependency_unavailable_and_ready_says_so(stack: Stack) -> None:
    api = stack.client()
    headers = _signup(api, "redis@example.com")
    assert _faucet(api, headers).status_code == 200
    stack.redis.kill()
    ready = api.get("/ready")
    assert ready.status_code == 503, ready.text  # never 500
    assert ready.json()["checks"]["log"] != "ok" and ready.json()["ready"] is False
    _assert_unavailable(_faucet(api, headers, key="during-redis"))  # a command
    _assert_unavailable(api.get("/api/v1/prices"))  # a read from Redis
    stack.redis.start()
    stack.restart_workers()
    assert _ready(api, 200).status_code == 200
    after: httpx.Response = eventually(
        lambda: _faucet(api, headers, key="during-redis"), lambda r: r.status_code == 200, 30
    )
    assert after.status_code == 200, after.text


def test_a_store_outage_is_503_dependency_unavailable_and_frees_its_keys(stack: Stack) -> None:
    api = stack.client()  # api0: its PostgreSQL connections go through the proxy
    headers = _signup(api, "pg@example.com")
    before = _faucet(api, headers).json()["balance"]["balance"]
    stack.api_store.cut()
    ready = api.get("/ready")
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["store"] != "ok"
    _assert_unavailable(api.get("/api/v1/balance", headers=headers))  # a read
    _assert_unavailable(_faucet(api, headers, key="during-pg"))  # a command
    stack.api_store.heal()
    assert _ready(api, 200).status_code == 200
    # The key of the refused command is free at once: it runs now (not 409 in use).
    after = _faucet(api, headers, key="during-pg")
    assert after.status_code == 200, after.text
    assert float(after.json()["balance"]["balance"]) == float(before) + 1


def test_a_killed_api_process_frees_its_in_flight_key_in_seconds(stack: Stack) -> None:
    a, b = stack.client(0), stack.client(1)
    headers = _signup(b, "killed@example.com")
    before = float(_faucet(b, headers).json()["balance"]["balance"])
    engine = stack.procs["engine"].proc
    engine.send_signal(signal.SIGSTOP)  # the command waits in the log: the request is in flight
    answered: list[Any] = []

    def in_flight() -> None:
        try:
            answered.append(_faucet(a, headers, key="in-flight"))
        except httpx.HTTPError as exc:
            answered.append(exc)

    thread = threading.Thread(target=in_flight)
    try:
        thread.start()
        time.sleep(1.0)
        stack.procs["api0"].stop(sig=signal.SIGKILL)  # killed mid-request: nothing released
        killed_at = time.monotonic()
    finally:
        engine.send_signal(signal.SIGCONT)
    thread.join(20)
    assert answered and isinstance(answered[0], httpx.HTTPError)  # its client never got an answer
    in_use = 0
    deadline = killed_at + 20
    while (retry := _faucet(b, headers, key="in-flight")).status_code != 200 and time.monotonic() < deadline:
        assert retry.status_code in (409, 503, 504), retry.text
        in_use += retry.json()["code"] == "idempotency_key_in_use"
        time.sleep(0.1)
    freed_after_s = time.monotonic() - killed_at
    assert retry.status_code == 200, retry.text
    assert freed_after_s < 10, freed_after_s  # the lease (3 s), not the old 30 s
    # Applied once: the retry got the first attempt's outcome from the engine.
    assert float(retry.json()["balance"]["balance"]) == before + 1
    assert float(_faucet(b, headers).json()["balance"]["balance"]) == before + 2
    print(f"key free {freed_after_s:.1f} s after the kill ({in_use} x 409 in use)")


def test_commands_without_an_engine_heartbeat_are_refused_before_they_are_logged(stack: Stack) -> None:
    api = stack.client()
    headers = _signup(api, "engine@example.com")
    before = float(_faucet(api, headers).json()["balance"]["balance"])
    engine = stack.procs["engine"].proc
    engine.send_signal(signal.SIGSTOP)  # alive but silent: its heartbeat expires
    try:
        ready = _ready(api, 503, timeout_s=15)
        assert ready.json()["checks"]["engine"] == "no engine heartbeat", ready.text
        refused: httpx.Response = eventually(
            lambda: _faucet(api, headers, key="no-engine"), lambda r: r.status_code == 503, 10
        )
        _assert_unavailable(refused)
        assert refused.json()["dependency"] == "engine"
    finally:
        engine.send_signal(signal.SIGCONT)
    assert _ready(api, 200).status_code == 200
    after: httpx.Response = eventually(
        lambda: _faucet(api, headers, key="no-engine"), lambda r: r.status_code == 200, 15
    )
    assert after.status_code == 200, after.text
    # Refused means not logged: only the retry was applied.
    assert float(after.json()["balance"]["balance"]) == before + 1

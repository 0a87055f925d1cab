"""Distributed mode rides out its dependencies (issue 16): the real `cashmarkets engine`,
`projector`, `gateway` and `chartgame` processes against a private Redis (SIGKILLed for a few
seconds, then started again on its AOF) or a private PostgreSQL (stopped -m immediate). Each
process stays up, picks up where it was, and the numbers come out exact."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.flows import eventually
from tests.e2e.processes import Cluster, Proc, distributed_cluster, free_port
from tests.support.private_pg import private_postgres
from tests.support.private_redis import PrivateRedis, private_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OUTAGE_S = 3.0
PASSWORD = "correct horse battery"


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


def sign_up(http: httpx.Client, email: str) -> dict[str, str]:
    token = http.post("/api/v1/signup", json={"email": email, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def faucet(http: httpx.Client, h: dict[str, str], key: str) -> httpx.Response:
    """One USDC, retried (same idempotency key: at most once) until the cluster answers 200."""
    return eventually(
        lambda: http.post(
            "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers={**h, "Idempotency-Key": key}
        ),
        lambda r: r.status_code == 200,
        timeout_s=30,
    )


def projected_usdc(http: httpx.Client, h: dict[str, str]) -> str | None:
    """The USDC balance as the projection has it (the API reads balances from SQL)."""
    r = http.get("/api/v1/balance", headers=h)
    if r.status_code != 200:
        return None
    found = [b["balance"] for b in r.json()["balances"] if b["asset"] == "USDC"]
    return found[0] if found else None


def assert_alive(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        proc = cluster.procs[name]
        assert proc.alive(), f"{name} exited:\n{proc.output()}"


def start_gateway(cluster: Cluster, port: int, metrics_port: int) -> Proc:
    env = {**cluster.env, "CASHMARKETS_WS_PORT": str(port), "CASHMARKETS_METRICS_PORT": str(metrics_port)}
    gateway = cluster.procs["gateway"] = Proc(["gateway"], env, cluster.tmp / "gateway.log")
    deadline = time.monotonic() + 60
    while "gateway running" not in gateway.output():
        assert gateway.alive() and time.monotonic() < deadline, gateway.output()
        time.sleep(0.1)
    return gateway


async def recv(ws: ClientConnection, timeout_s: float = 30) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return decoded


async def until(ws: ClientConnection, match: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages before the first one `match` accepts, and that one."""
    before = []
    while True:
        message = await recv(ws)
        if match(message):
            return before, message
        before.append(message)


def test_a_redis_outage_pauses_engine_projector_and_gateway(
    tmp_path: Path, pg_url: str, own_redis: PrivateRedis
) -> None:
    env = {"CASHMARKETS_REDIS_URL": own_redis.url(), "CASHMARKETS_PRICE_INTERVAL_MS": "100"}
    with distributed_cluster(tmp_path, pg_url, env, poller=True) as cluster:
        http = httpx.Client(base_url=cluster.urls[0], timeout=15)
        h = sign_up(http, "outage@example.com")
        port, metrics_port = free_port(), free_port()
        start_gateway(cluster, port, metrics_port)

        def redis_up() -> float | None:
            """The gateway's cashmarkets_dependency_up{dependency="redis"}."""
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith('cashmarkets_dependency_up{dependency="redis"}'):
                    return float(line.split()[-1])
            return None

        token = h["Authorization"].removeprefix("Bearer ")

        async def story() -> None:
            async with connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 1}))
                snapshot, _ = await until(ws, lambda m: m.get("id") == 1)
                assert snapshot[0]["data"]["balance"] == "5000.000000"
                assert (await asyncio.to_thread(faucet, http, h, "before")).json()["balance"]["balance"] == (
                    "5001.000000"
                )
                _, before = await until(ws, lambda m: m.get("data", {}).get("balance") == "5001.000000")
                last_seq = before["seq"]

                await asyncio.to_thread(own_redis.kill)
                _, interrupted = await until(ws, lambda m: "event" in m)
                assert interrupted == {"stream": "account", "event": "interrupted", "seq": last_seq}
                assert await asyncio.to_thread(redis_up) == 0.0
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(own_redis.start)
                _, resumed = await until(ws, lambda m: "event" in m)
                assert resumed == {"stream": "account", "event": "resumed", "replayed": True, "seq": last_seq}
                assert await asyncio.to_thread(redis_up) == 1.0

                # The socket it kept carries on with the next seq, no gap and no repeat.
                after = await asyncio.to_thread(faucet, http, h, "after")
                assert after.json()["balance"]["balance"] == "5002.000000"
                _, update = await until(ws, lambda m: m.get("stream") == "account")
                assert update["seq"] == last_seq + 1
                assert update["data"]["balance"] == "5002.000000"

        asyncio.run(story())
        assert_alive(cluster, ["engine", "projector", "gateway", "poller", "api0", "api1"])
        assert cluster.procs["poller"].stop() == 0  # no more ticks: the log's length stands still
        # Applied once each, in order: the engine's seq is the number of records in the log.
        client = redis.Redis.from_url(own_redis.url())
        stream = cluster.env["CASHMARKETS_REDIS_STREAM"]
        length = client.xlen(stream)
        alive_key = f"{stream}:engine:alive"
        seen = eventually(lambda: client.get(alive_key), lambda v: v is not None and int(v) == length)
        assert seen is not None and int(seen) == length
        # The projector caught up with the exact balance.
        assert eventually(lambda: projected_usdc(http, h), lambda b: b == "5002.000000") == "5002.000000"
        for name in ("engine", "projector", "gateway"):  # once per outage, not per retry
            output = cluster.procs[name].output()
            assert output.count("waiting for dependency") == 1, output
            assert "dependency back" in output, output
        client.close()


def test_a_postgres_outage_does_not_stop_the_projector(tmp_path: Path) -> None:
    with private_postgres() as pg, private_redis() as own_redis:
        pg_url = pg.create_database("cm")
        # A short lease: the projector loses it during the outage and must campaign again.
        # Price ticks keep the projector writing batches while PostgreSQL is down.
        env = {
            "CASHMARKETS_REDIS_URL": own_redis.url(),
            "CASHMARKETS_LEASE_TTL_S": "1.5",
            "CASHMARKETS_PRICE_INTERVAL_MS": "100",
        }
        with distributed_cluster(tmp_path, pg_url, env, poller=True) as cluster:
            http = httpx.Client(base_url=cluster.urls[0], timeout=15)
            h = sign_up(http, "pg-outage@example.com")
            assert faucet(http, h, "before").status_code == 200
            assert eventually(lambda: projected_usdc(http, h), lambda b: b == "5001.000000") == "5001.000000"
            pg.kill()
            time.sleep(OUTAGE_S)
            pg.start()
            after = faucet(http, h, "after")
            assert after.json()["balance"]["balance"] == "5002.000000", after.text
            assert eventually(lambda: projected_usdc(http, h), lambda b: b == "5002.000000", 30) == (
                "5002.000000"
            )
            assert_alive(cluster, ["engine", "projector", "poller", "api0", "api1"])
            output = cluster.procs["projector"].output()
            assert "waiting for dependency" in output and "dependency back" in output, output
            # The engine's snapshots failed meanwhile (ticks keep coming); it kept applying.
            engine = eventually(cluster.procs["engine"].output, lambda out: "dependency back" in out)
            assert '"doing": "saving a snapshot"' in engine and "dependency back" in engine, engine


CG = "/api/v1/chartgame"
CANDLES_PER_ROUND = 461  # btc-30s


def open_round(http: httpx.Client) -> dict[str, Any] | None:
    """The newest round of btc-30s if it is open (its `candles` count is written at settlement)."""
    rounds = http.get(f"{CG}/games/btc-30s/rounds").json()["rounds"]
    return rounds[0] if rounds and rounds[0]["status"] == "open" else None


def test_a_redis_outage_pauses_the_chart_round_which_then_resumes(
    tmp_path: Path, pg_url: str, own_redis: PrivateRedis
) -> None:
    """Decision 019: a round that cannot go on during an outage pauses and resumes (same round,
    candles continuing from where they stopped); the scheduler process stays up."""
    with distributed_cluster(tmp_path, pg_url, {"CASHMARKETS_REDIS_URL": own_redis.url()}) as cluster:
        env = {**cluster.env, "CASHMARKETS_DATA_DIR": str(cluster.tmp / "scheduler")}
        chart = cluster.procs["chartgame"] = Proc(["chartgame"], env, cluster.tmp / "chartgame.log")
        http = httpx.Client(base_url=cluster.urls[0], timeout=15)
        h = sign_up(http, "round@example.com")
        position = {"game": "btc-30s", "side": "long", "stake": "10", "leverage": 2}
        deadline = time.monotonic() + 90
        opened = None
        while opened is None and time.monotonic() < deadline:
            assert chart.alive(), chart.output()
            r = http.post(f"{CG}/positions", json=position, headers=h)
            if r.status_code == 200 and (live := open_round(http)) is not None:
                opened = r.json()
            else:
                time.sleep(0.3)
        assert opened is not None and live is not None, chart.output()

        path = f"{CG}/rounds/btc-30s/{opened['round']}"

        def candles() -> list[int]:
            return [c["i"] for c in http.get(f"{path}/candles", params={"limit": 500}).json()["candles"]]

        before = len(candles())
        own_redis.kill()
        time.sleep(OUTAGE_S)
        own_redis.start()
        # The same round goes on from the candle it stopped at: none skipped, none made twice.
        target = min(before + 20, CANDLES_PER_ROUND)  # or all of them, if it was near its end
        made = eventually(candles, lambda got: len(got) >= target, timeout_s=30)
        assert len(made) >= target and made == list(range(len(made))), (before, made)
        assert http.get(path).json()["status"] in ("open", "settled")  # never voided
        assert chart.alive(), chart.output()
        http.post(f"{CG}/positions/{opened['positionId']}/close", headers=h)  # unless settled already

        def mine() -> dict[str, Any]:
            found = http.get(f"{CG}/positions", headers=h).json()["positions"]
            return next(p for p in found if p["positionId"] == opened["positionId"])

        # Closed by the player or settled with the round: paid out once, to the unit.
        done = eventually(mine, lambda p: p["status"] != "open" and p["payout"] is not None, timeout_s=30)
        assert done["status"] != "open" and done["payout"] is not None, done
        expected = Decimal("5000") - Decimal(done["stake"]) - Decimal(done["fee"]) + Decimal(done["payout"])
        want = f"{expected:.6f}"
        assert eventually(lambda: projected_usdc(http, h), lambda b: b == want, timeout_s=20) == want
        assert_alive(cluster, ["chartgame", "engine", "projector", "api0", "api1"])
        assert "waiting for dependency" in chart.output() and "dependency back" in chart.output()


def test_a_process_started_during_an_outage_waits_for_its_dependency(
    tmp_path: Path, own_redis: PrivateRedis
) -> None:
    """The poller started while Redis is down waits (it does not exit), then polls once it is up."""
    stream = "cashmarkets:test:late"
    own_redis.kill()
    env = {
        "CASHMARKETS_REDIS_URL": own_redis.url(),
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_PRICE_INTERVAL_MS": "100",
        "CASHMARKETS_DATA_DIR": str(tmp_path / "data"),
    }
    poller = Proc(["poller"], env, tmp_path / "poller.log")
    try:
        waiting = eventually(poller.output, lambda out: "waiting for dependency" in out, timeout_s=30)
        assert "waiting for dependency" in waiting and poller.alive(), waiting
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url())
        assert eventually(lambda: client.xlen(stream), lambda n: n > 0, timeout_s=30) > 0, poller.output()
        client.close()
        assert poller.alive() and "dependency back" in poller.output()
    finally:
        assert poller.stop() == 0, poller.output()


def test_a_redis_back_without_its_data_stops_the_engine_with_a_clear_error(
    tmp_path: Path, own_redis: PrivateRedis
) -> None:
    """Waiting cannot fix a log that lost acknowledged commands: the engine exits non-zero
    rather than apply what comes next on top of a state the log no longer has."""
    stream = "cashmarkets:test:lost"
    env = {
        "CASHMARKETS_REDIS_URL": own_redis.url(),
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_DATA_DIR": str(tmp_path / "data"),
    }
    engine = Proc(["engine"], env, tmp_path / "engine.log")
    try:
        assert eventually(engine.output, lambda out: "engine running" in out, 60) and engine.alive()
        asyncio.run(append_deposit(own_redis.url(), stream))
        client = redis.Redis.from_url(own_redis.url())
        alive_key = f"{stream}:engine:alive"
        # The heartbeat carries the engine's seq: every record of the log (genesis + the deposit).
        applied = eventually(
            lambda: client.get(alive_key), lambda v: v is not None and int(v) == client.xlen(stream)
        )
        assert applied is not None and int(applied) == client.xlen(stream), engine.output()
        client.close()
        own_redis.kill()
        for path in own_redis.directory.iterdir():  # the AOF and everything else: gone
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != "redis.log":
                path.unlink()
        own_redis.start()
        assert engine.proc.wait(timeout=30) != 0
        assert "lost acknowledged commands" in engine.output(), engine.output()
    finally:
        engine.stop()


async def append_deposit(url: str, stream: str) -> None:
    from cashmarkets.bootstrap import build_engine
    from cashmarkets.core.commands import Deposit
    from cashmarkets.log.redis_streams import RedisStreamLog

    log = RedisStreamLog(url, stream)
    await log.open()
    deposit = Deposit(command_id="d1", owner="u1", asset="USDC", amount=1)
    await log.append([build_engine().codec.encoder.encode(deposit)])
    await log.close()

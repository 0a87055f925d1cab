"""Distributed mode: two `cashmarkets gateway` processes sharing one port (SO_REUSEPORT), each
following the Redis log with its own replica; prices from the poller, private streams, commands
over the socket through Redis, and a gateway killed under its clients."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.processes import Cluster, Proc, distributed_cluster, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


async def recv(ws: ClientConnection, timeout_s: float = 10) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout_s)
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def until_reply(ws: ClientConnection, request_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stream messages received before the reply to `request_id`, and that reply."""
    before = []
    while True:
        message = await recv(ws)
        if message.get("id") == request_id:
            return before, message
        before.append(message)


async def connect_when_up(url: str, timeout_s: float = 30) -> ClientConnection:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def start_gateways(cluster: Cluster, port: int) -> list[Proc]:
    """Two gateways on one port, both listening before this returns (else the kernel has only
    one listener to hand connections to)."""
    env = {**cluster.env, "CASHMARKETS_WS_PORT": str(port)}
    gateways = [Proc(["gateway"], env, cluster.tmp / f"gateway{i}.log") for i in range(2)]
    deadline = time.monotonic() + 60
    while not all("gateway running" in g.output() for g in gateways):
        assert all(g.alive() for g in gateways), [g.output() for g in gateways]
        assert time.monotonic() < deadline, [g.output() for g in gateways]
        time.sleep(0.1)
    return gateways


def test_two_gateways_one_port_replicas_commands_and_failover(tmp_path: Path, pg_url: str) -> None:
    env = {"CASHMARKETS_PRICE_INTERVAL_MS": "100"}
    with distributed_cluster(tmp_path, pg_url, env, poller=True) as cluster:
        api = httpx.Client(base_url=cluster.urls[0], timeout=15)
        token = api.post(
            "/api/v1/signup", json={"email": "ws@example.com", "password": "correct horse battery"}
        ).json()["token"]
        port = free_port()
        gateways = start_gateways(cluster, port)
        cluster.retired.extend(gateways)  # stopped with the cluster
        url = f"ws://127.0.0.1:{port}/ws"

        async def story() -> None:
            clients = [await connect_when_up(url) for _ in range(16)]
            for i, ws in enumerate(clients):
                await ws.send(
                    json.dumps({"method": "SUBSCRIBE", "params": ["bookTicker.BTC_USDC_PERP"], "id": i})
                )
            for i, ws in enumerate(clients):
                _, reply = await until_reply(ws, i)
                assert reply == {"id": i, "result": None}
                seqs = [(await recv(ws))["seq"] for _ in range(3)]
                assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]  # the poller's ticks, no gap
            # A private stream and commands, through whichever gateway this lands on.
            async with connect(f"{url}?token={token}") as me:
                await me.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 1}))
                snapshot, _ = await until_reply(me, 1)
                assert snapshot[0]["data"]["balance"] == "5000.000000"
                order = {
                    "asset": "BTC",
                    "type": "long",
                    "margin": 10_000,
                    "leverage": 2,
                    "idempotencyKey": "k",
                }
                await me.send(json.dumps({"method": "OPEN_POSITION", "params": [order], "id": 2}))
                updates, opened = await until_reply(me, 2)
                assert opened["result"]["event"] == "opened"
                while len(updates) < 2:  # the replica's own account messages for the trade
                    updates.append(await recv(me))
                kinds = sorted(u["data"].get("event", "balance") for u in updates)
                assert kinds == ["balance", "opened"]
            # Kill one gateway: its clients lose the connection, reconnect to the other, resubscribe.
            gateways[0].stop(sig=signal.SIGKILL)
            alive = 0
            for i, ws in enumerate(clients):
                try:
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 100}))
                    _, listed = await until_reply(ws, 100)
                    assert listed["result"] == ["bookTicker.BTC_USDC_PERP"]
                    alive += 1
                except ConnectionClosed:
                    again = await connect_when_up(url)
                    await again.send(
                        json.dumps({"method": "SUBSCRIBE", "params": ["bookTicker.BTC_USDC_PERP"], "id": 7})
                    )
                    before, reply = await until_reply(again, 7)
                    assert (
                        reply["result"] is None and before[0]["stream"] == "bookTicker.BTC_USDC_PERP"
                    )  # last message
                    clients[i] = again
            # The kernel spreads connections over both listeners: all 16 on one has odds of 2**-15.
            assert 0 < alive < len(clients), alive
            for ws in clients:
                assert (await recv(ws))[
                    "stream"
                ] == "bookTicker.BTC_USDC_PERP"  # every client is served again
                await ws.close()

        asyncio.run(story())
        assert gateways[1].alive(), gateways[1].output()


def test_one_rate_limit_per_user_over_api_and_gateway_processes(tmp_path: Path, pg_url: str) -> None:
    """Two API processes and two gateways: a user's HTTP requests and socket commands take from
    one bucket in Redis, whichever processes serve them."""
    env = {"CASHMARKETS_RATE_LIMIT_USER_BURST": "3", "CASHMARKETS_RATE_LIMIT_USER_PER_S": "0.01"}
    with distributed_cluster(tmp_path, pg_url, env) as cluster:
        apis = [httpx.Client(base_url=url, timeout=15) for url in cluster.urls]

        def signup(email: str) -> str:
            r = apis[0].post("/api/v1/signup", json={"email": email, "password": "correct horse battery"})
            assert r.status_code == 201, r.text
            apis[0].cookies.clear()  # else the next request is this user's too (the auth cookie)
            return str(r.json()["token"])

        alice, bob = signup("alice@example.com"), signup("bob@example.com")
        port = free_port()
        cluster.retired.extend(start_gateways(cluster, port))
        url = f"ws://127.0.0.1:{port}/ws"

        def balance(api: httpx.Client, token: str) -> int:
            return api.get("/api/v1/balance", headers={"Authorization": f"Bearer {token}"}).status_code

        async def story() -> None:
            # Alice: three requests over both API processes, then her socket command is refused.
            assert [balance(apis[i % 2], alice) for i in range(3)] == [200, 200, 200]
            async with await connect_when_up(f"{url}?token={alice}") as ws:
                await ws.send(json.dumps({"method": "GET_BALANCE", "params": [{}], "id": 1}))
                _, reply = await until_reply(ws, 1)
                assert (reply["error"]["code"], reply["error"]["reason"]) == (11, "rate_limited")
                assert reply["error"]["retryAfterMs"] > 1_000
            # Bob: three socket commands over several connections (the kernel spreads them over
            # both gateways), then his HTTP request is refused, on either API process.
            for i in range(3):
                async with await connect_when_up(f"{url}?token={bob}") as ws:
                    await ws.send(json.dumps({"method": "GET_BALANCE", "params": [{}], "id": i}))
                    _, reply = await until_reply(ws, i)
                    assert reply["result"]["balances"][0]["asset"] == "USDC", reply
            assert [balance(api, bob) for api in apis] == [429, 429]

        asyncio.run(story())

"""Distributed mode: a sign-out on one API process, or an account disabled from the CLI, holds on
the other API process and on a `cashmarkets gateway` within the documented bound (each process
trusts a user's state for at most 1 s; the gateway rechecks its signed-in sockets every second)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.processes import Proc, distributed_cluster, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PASSWORD = "correct horse battery"
# The bound is 1 s; the rest is slack for a loaded test machine (requests, process scheduling).
HTTP_WITHIN_S = 1.5
SOCKET_WITHIN_S = 2.5


async def until_refused(api: httpx.AsyncClient, token: str, since: float) -> float:
    """Poll GET /me with `token` until it is refused; the seconds since `since` that took."""
    while True:
        status = (await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code
        if status == 401:
            return time.monotonic() - since
        assert status == 200, status
        assert time.monotonic() - since < 10, "never refused"
        await asyncio.sleep(0.05)


async def closed_code(ws: ClientConnection, since: float) -> tuple[int, float]:
    """Read until the server closes; (close code, seconds since `since`)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, time.monotonic() - since


async def connect_when_up(url: str, timeout_s: float = 30) -> ClientConnection:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_sign_out_and_disabling_reach_every_process_within_a_second(tmp_path: Path, pg_url: str) -> None:
    with distributed_cluster(tmp_path, pg_url) as cluster:
        port = free_port()
        gateway = Proc(["gateway"], {**cluster.env, "CASHMARKETS_WS_PORT": str(port)}, tmp_path / "gw.log")
        cluster.retired.append(gateway)  # stopped with the cluster
        deadline = time.monotonic() + 60
        while "gateway running" not in gateway.output():
            assert gateway.alive() and time.monotonic() < deadline, gateway.output()
            time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/ws"

        async def story() -> None:
            a = httpx.AsyncClient(base_url=cluster.urls[0], timeout=15)
            b = httpx.AsyncClient(base_url=cluster.urls[1], timeout=15)
            credentials = {"email": "d@example.com", "password": PASSWORD}
            first: dict[str, Any] = (await a.post("/api/v1/signup", json=credentials)).json()
            second: dict[str, Any] = (await a.post("/api/v1/signin", json=credentials)).json()
            for api in (a, b):  # both processes have the user's state in memory now
                for body in (first, second):
                    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
                    assert me.status_code == 200
            sockets = [await connect_when_up(f"{url}?token={body['token']}") for body in (first, second)]
            for ws in sockets:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account"], "id": 1}))
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert snapshot["stream"] == "account" and snapshot["data"]["balance"] == "5000.000000"

            # Sign out the first sign-in on API A: B and the gateway refuse it within the bound.
            out = await a.post("/api/v1/signout", json={"refreshToken": first["refreshToken"]})
            assert out.status_code == 200
            since = time.monotonic()
            took_b, (code, took_ws) = await asyncio.gather(
                until_refused(b, first["token"], since), closed_code(sockets[0], since)
            )
            assert took_b < HTTP_WITHIN_S, took_b
            assert code == 4001 and took_ws < SOCKET_WITHIN_S, (code, took_ws)
            me = await b.get("/api/v1/me", headers={"Authorization": f"Bearer {second['token']}"})
            assert me.status_code == 200  # the other sign-in stands

            # Disable the account from the CLI (another process again): every process refuses it.
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cashmarkets.cli", "users", "set-status", "d@example.com", "disabled"],
                env={**os.environ, **cluster.env},
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            since = time.monotonic()
            took_a, took_b, (code, took_ws) = await asyncio.gather(
                until_refused(a, second["token"], since),
                until_refused(b, second["token"], since),
                closed_code(sockets[1], since),
            )
            assert took_a < HTTP_WITHIN_S and took_b < HTTP_WITHIN_S, (took_a, took_b)
            assert code == 4001 and took_ws < SOCKET_WITHIN_S, (code, took_ws)
            signin = await b.post("/api/v1/signin", json=credentials)
            assert signin.status_code == 403 and signin.json()["code"] == "account_disabled"
            await a.aclose()
            await b.aclose()

        asyncio.run(story())
        assert gateway.alive(), gateway.output()

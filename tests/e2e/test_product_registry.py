"""A product added through the registration line alone: `cashmarkets serve` with
CASHMARKETS_PRODUCTS=+tests.support.coinflip (a product that lives only in the tests) serves its
route, its socket command, its stream and its projection, and no hub names it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.e2e.flows import eventually
from tests.e2e.processes import Proc, distributed_cluster, free_port, wait_ready
from tests.support.ws_client import call, recv_json

ROOT = Path(__file__).resolve().parents[2]


def test_no_hub_names_the_test_product() -> None:
    hits = [p for p in (ROOT / "src").rglob("*.py") if "coinflip" in p.read_text()]
    assert hits == []


def _product_env() -> dict[str, str]:
    return {
        "CASHMARKETS_PRODUCTS": "+tests.support.coinflip",
        # The test product is imported from the repository's tests package.
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _serve(tmp_path: Path) -> tuple[Proc, str, str]:
    port, ws_port = free_port(), free_port()
    env = {**_product_env(), "CASHMARKETS_WS_PORT": str(ws_port)}
    proc = Proc(
        ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)], env, tmp_path / "serve.log"
    )
    return proc, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{ws_port}/ws"


async def _flip_over_the_socket(ws_url: str, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """COMMAND coinflip.flip on the socket: (its answer, the flip as the coinflip.flips topic sent it)."""
    async with websockets.connect(ws_url) as ws:
        assert (await call(ws, "AUTH", token))["result"]
        assert "error" not in await call(ws, "SUBSCRIBE", "coinflip.flips", request_id=2)
        unknown = await call(ws, "COMMAND", {"command": "coinflip.nope"}, request_id=3)
        assert unknown["error"]["code"] == 2, unknown
        body = {
            "command": "coinflip.flip",
            "asset": "USDC",
            "stake": "1",
            "call": "heads",
            "idempotencyKey": "k1",
        }
        await ws.send(json.dumps({"method": "COMMAND", "params": [body], "id": 4}))
        answer: dict[str, Any] | None = None
        streamed: dict[str, Any] | None = None
        while answer is None or streamed is None:
            message = await recv_json(ws)
            if message.get("id") == 4:
                answer = message
            elif message.get("stream") == "coinflip.flips":
                streamed = message["data"]
        return answer, streamed


def test_a_registered_test_product_works_through_every_hub(tmp_path: Path) -> None:
    proc, url, ws_url = _serve(tmp_path)
    try:
        wait_ready(proc, url)
        with httpx.Client(base_url=url, timeout=15) as client:
            signup = {"email": "flip@example.com", "password": "correct horse battery"}
            h = {"Authorization": f"Bearer {client.post('/api/v1/signup', json=signup).json()['token']}"}

            def usdc() -> float:
                balances = client.get("/api/v1/balance", headers=h).json()["balances"]
                return float(next(b["balance"] for b in balances if b["asset"] == "USDC"))

            assert (
                client.post("/api/v1/faucet", json={"asset": "USDC", "amount": "10"}, headers=h).status_code
                == 200
            )
            before = usdc()
            # The socket command and the stream.
            answer, streamed = asyncio.run(_flip_over_the_socket(ws_url, h["Authorization"].split()[1]))
            first = answer["result"]
            assert first["flipId"] == 1 and first["outcome"] in ("heads", "tails"), answer
            assert streamed["flipId"] == 1 and streamed["outcome"] == first["outcome"]
            # The route; the product's own rejection code with the status its module declares.
            second = client.post(
                "/api/v1/coinflip/flips", json={"asset": "USDC", "stake": "2", "call": "tails"}, headers=h
            )
            assert second.status_code == 200, second.text
            assert second.json()["flipId"] == 2
            bad = client.post(
                "/api/v1/coinflip/flips", json={"asset": "USDC", "stake": "1", "call": "edge"}, headers=h
            )
            assert (bad.status_code, bad.json()["code"]) == (400, "bad_call")
            # The ledger moved the stakes; the projection wrote the flips (its table from its own migration).
            flips = [first, second.json()]
            won = sum((1 if f["outcome"] == f["call"] else -1) * float(f["stake"]) for f in flips)
            assert usdc() == before + won
            listed = eventually(
                lambda: client.get("/api/v1/coinflip/flips", headers=h).json()["flips"],
                lambda rows: len(rows) == 2,
            )
            assert [(f["flipId"], f["outcome"], f["payout"]) for f in listed] == [
                (f["flipId"], f["outcome"], f["payout"]) for f in flips
            ]
    finally:
        proc.stop()


def test_the_test_product_in_distributed_mode(tmp_path: Path, pg_url: str) -> None:
    """`migrate` creates its table on PostgreSQL (a second Alembic head), the engine process runs
    it, the projector process projects it, an API process routes it, a gateway process streams it
    and takes its socket command through Redis."""
    with distributed_cluster(tmp_path, pg_url, _product_env()) as cluster:
        port = free_port()
        gateway = Proc(["gateway"], {**cluster.env, "CASHMARKETS_WS_PORT": str(port)}, cluster.tmp / "gw.log")
        cluster.retired.append(gateway)  # stopped with the cluster
        deadline = time.monotonic() + 60
        while "gateway running" not in gateway.output():
            assert gateway.alive() and time.monotonic() < deadline, gateway.output()
            time.sleep(0.1)
        with (
            httpx.Client(base_url=cluster.urls[0], timeout=15) as a,
            httpx.Client(base_url=cluster.urls[1]) as b,
        ):
            signup = {"email": "dflip@example.com", "password": "correct horse battery"}
            token = a.post("/api/v1/signup", json=signup).json()["token"]
            h = {"Authorization": f"Bearer {token}"}
            assert (
                a.post("/api/v1/faucet", json={"asset": "USDC", "amount": "10"}, headers=h).status_code == 200
            )
            answer, streamed = asyncio.run(_flip_over_the_socket(f"ws://127.0.0.1:{port}/ws", token))
            assert answer["result"]["flipId"] == 1 and streamed["flipId"] == 1, (answer, streamed)
            flipped = a.post(
                "/api/v1/coinflip/flips", json={"asset": "USDC", "stake": "2", "call": "tails"}, headers=h
            )
            assert flipped.status_code == 200 and flipped.json()["flipId"] == 2, flipped.text
            listed = eventually(
                lambda: b.get("/api/v1/coinflip/flips", headers=h).json()["flips"],
                lambda rows: len(rows) == 2,
            )
            assert [f["outcome"] for f in listed] == [answer["result"]["outcome"], flipped.json()["outcome"]]

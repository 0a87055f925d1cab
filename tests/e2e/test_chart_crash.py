"""Black-box: `cashmarkets serve` killed (SIGKILL) in the middle of a chart round comes back and
finishes the same round with the same candles; the settled round passes the standalone verifier."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.e2e.processes import Proc, free_port, wait_ready

TOOL = Path(__file__).resolve().parents[2] / "tools" / "verify_round.py"
GAME = "btc-30s"


def serve(tmp_path: Path, port: int, ws_port: int, name: str) -> Proc:
    return Proc(
        ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        {
            "CASHMARKETS_CHARTGAME": "1",
            "CASHMARKETS_PRICE_SOURCE": "none",
            "CASHMARKETS_WS_PORT": str(ws_port),
        },
        tmp_path / f"{name}.log",
    )


async def candles_until(url: str, stop: Any, timeout_s: float) -> list[dict[str, Any]]:
    """Candle messages of `candles.<game>` until stop(candles) is true (or the time is up)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    async with connect(url) as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [f"candles.{GAME}"], "id": 1}))
        while time.monotonic() < deadline and not stop(got):
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except TimeoutError:
                continue
            if message.get("stream") == f"candles.{GAME}":
                got.append(message["data"])
    return got


def test_a_round_survives_a_kill_with_the_same_candles(tmp_path: Path) -> None:
    port, ws_port = free_port(), free_port()
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{ws_port}/ws"
    first = serve(tmp_path, port, ws_port, "serve0")
    try:
        wait_ready(first, base)
        before = asyncio.run(candles_until(ws, lambda got: len(got) >= 40 and got[-1]["i"] >= 30, 60))
        assert before and before[-1]["i"] >= 30, before[-3:]
    finally:
        first.stop(signal.SIGKILL)
    round_no = before[-1]["round"]
    second = serve(tmp_path, port, ws_port, "serve1")
    try:
        wait_ready(second, base)
        with httpx.Client(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                r = http.get(f"/api/v1/chartgame/rounds/{GAME}/{round_no}")
                if r.status_code == 200 and r.json()["status"] == "settled":
                    break
                time.sleep(0.5)
            assert r.json()["status"] == "settled", r.text
            doc = None
            while time.monotonic() < deadline:  # the projection may trail the settlement a little
                v = http.get(f"/api/v1/chartgame/rounds/{GAME}/{round_no}/verify")
                if v.status_code == 200 and len(v.json()["candles"]) == v.json()["candlesPerRound"]:
                    doc = v.json()
                    break
                time.sleep(0.5)
        assert doc is not None
    finally:
        assert second.stop() in (0, -signal.SIGTERM), second.output()
    # Every candle streamed before the kill is the settled round's candle of the same index.
    decimals = doc["model"]["priceDecimals"]
    final = {c[0]: c for c in doc["candles"]}
    for streamed in (c for c in before if c["round"] == round_no):
        i = streamed["i"]
        close = final[i][4]
        assert streamed["c"] == f"{close // 10**decimals}.{close % 10**decimals:0{decimals}d}", i
    path = tmp_path / "round.json"
    path.write_text(json.dumps(doc))
    verified = subprocess.run(
        [sys.executable, str(TOOL), str(path)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout

"""`/ready` in embedded mode tells the truth about the projector: not ready when it has stopped or
the projection is further behind the engine than CASHMARKETS_READY_MAX_LAG_MS, ready again when it
has caught up; reads carry the projection's lag in `X-Projection-Lag-Ms`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from cashmarkets.store.projector import Projector
from tests.integration.api_helpers import bearer, embedded, services_of, signup

READY_MAX_LAG_MS = 500


async def _until(client: AsyncTestClient[Any], status: int, timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get("/ready")
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def test_ready_turns_false_when_the_projection_lags_and_true_when_it_catches_up(tmp_path: Path) -> None:
    async with embedded(tmp_path, ready_max_lag_ms=READY_MAX_LAG_MS) as client:
        ready = await _until(client, 200)
        assert ready.status_code == 200, ready.text
        user = await signup(client, "lag@example.com")
        read = await client.get("/api/v1/balance", headers=bearer(user["token"]))
        assert read.status_code == 200
        assert int(read.headers["x-projection-lag-ms"]) >= 0
        projector: Projector = services_of(client).extras["projector"]
        # Hold the projector's store writes: its batches wait; the engine goes on.
        step = projector.step
        held = asyncio.Event()

        async def stalled() -> int:
            await held.wait()
            return await step()

        projector.step = stalled  # type: ignore[method-assign]
        try:
            for _ in range(3):
                faucet = await client.post(
                    "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(user["token"])
                )
                assert faucet.status_code == 200, faucet.text
            # Nothing more is projected: within a couple of samples the lag passes the limit.
            deadline = time.monotonic() + 15
            while True:
                ready = await client.get("/ready")
                if ready.status_code == 503 or time.monotonic() > deadline:
                    break
                await client.post(
                    "/api/v1/faucet", json={"asset": "USDC", "amount": "1"}, headers=bearer(user["token"])
                )
                await asyncio.sleep(0.2)
            assert ready.status_code == 503, ready.text
            assert "behind the engine" in ready.json()["checks"]["projector"]
            assert ready.json()["projectionLagMs"] > READY_MAX_LAG_MS
            read = await client.get("/api/v1/balance", headers=bearer(user["token"]))
            assert int(read.headers["x-projection-lag-ms"]) > READY_MAX_LAG_MS
        finally:
            held.set()
            projector.step = step  # type: ignore[method-assign]
        ready = await _until(client, 200)
        assert ready.status_code == 200, ready.text
        assert ready.json()["projectionLagMs"] == 0

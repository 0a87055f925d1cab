"""The distributed projector's heartbeat in Redis, as API processes read it: present while the
projector holds its lease, carrying the projection's lag; `/ready`'s projector check turns false
past the lag limit or without a heartbeat, and true again once caught up."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace

import pytest
import redis.asyncio

from cashmarkets.runtime.projection_health import (
    ProjectionHealth,
    beat_reader,
    projector_alive_key,
    start_heartbeat,
)

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_LAG_MS = 1500


async def _until(health: ProjectionHealth, check: object, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await health.check()
        if found == check or (check == "behind" and "behind" in found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_the_heartbeat_carries_the_lag_and_ready_follows_it() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    stream = f"cashmarkets:test:{uuid.uuid4().hex}"
    # The projector's state as the heartbeat reads it: the lease term it acts under, its checkpoint.
    projector = SimpleNamespace(term=None, seq=10)
    engine = {"seq": 10}

    async def engine_seq() -> int | None:
        return engine["seq"]

    health = ProjectionHealth(beat_reader(client, stream), MAX_LAG_MS)
    beat = start_heartbeat(client, stream, projector, engine_seq)
    assert beat is not None
    try:
        # A standby (no lease) publishes nothing: no heartbeat, not ready.
        await asyncio.sleep(1.2)
        assert await health.check() == "no projector heartbeat"
        assert health.header() is None
        projector.term = object()
        assert await _until(health, "ok") == "ok"
        assert health.header() == (b"x-projection-lag-ms", b"0")
        engine["seq"] = 50  # the engine moves on; the projection does not
        assert (await _until(health, "behind")).startswith("projection ")
        assert health.lag_ms is not None and health.lag_ms > MAX_LAG_MS
        projector.seq = 50  # caught up
        assert await _until(health, "ok") == "ok"
        assert health.lag_ms == 0
        beat.cancel()  # the projector died: its heartbeat expires
        assert await _until(health, "no projector heartbeat") == "no projector heartbeat"
    finally:
        beat.cancel()
        await client.delete(projector_alive_key(stream))
        await client.aclose()

"""Durable, acknowledged commands/s through the runtime (group commit), and ack latency.

`submitters` tasks each submit one command, wait for its acknowledgement (durable in the log and
applied), and submit the next, for `duration_s`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from cashmarkets.core.commands import Deposit, TransferFunds
from cashmarkets.core.engine import Engine
from cashmarkets.log.base import CommandLog
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.runtime.runner import Runtime, RuntimeConfig
from cashmarkets.store.snapshots import SnapshotStore


async def run(
    backend: str = "sqlite", submitters: int = 64, duration_s: float = 5.0, redis_url: str = ""
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        stream = f"cashmarkets:bench:{uuid.uuid4().hex}"
        log: CommandLog
        if backend == "redis":
            log = RedisStreamLog(redis_url, stream)
        else:
            log = SqliteJournal(Path(tmp) / "journal.db")
        runtime = Runtime(
            Engine(),
            log,
            SnapshotStore(f"sqlite+aiosqlite:///{tmp}/store.db"),
            RuntimeConfig(snapshot_interval_s=3600, snapshot_every_commands=10**9),
            scratch_dir=Path(tmp),
        )
        await runtime.start()
        try:
            for i in range(submitters):
                await runtime.submit(
                    Deposit(command_id=f"fund-{i}", owner=f"u{i}", asset="USDC", amount=10**15)
                )
            latencies: list[int] = []
            deadline = time.perf_counter() + duration_s

            async def submitter(i: int) -> None:
                n = 0
                clock = time.perf_counter_ns
                while time.perf_counter() < deadline:
                    n += 1
                    cmd = TransferFunds(
                        command_id=f"s{i}-{n}",
                        from_owner=f"u{i}",
                        to_owner=f"u{(i + 1) % submitters}",
                        asset="USDC",
                        amount=1,
                    )
                    t0 = clock()
                    await runtime.submit(cmd)
                    latencies.append(clock() - t0)

            batches0 = runtime.stats["batches"]
            start = time.perf_counter()
            await asyncio.gather(*(submitter(i) for i in range(submitters)))
            elapsed = time.perf_counter() - start
            batches = runtime.stats["batches"] - batches0
        finally:
            await runtime.stop(snapshot=False)
            if backend == "redis":
                import redis.asyncio

                client = redis.asyncio.Redis.from_url(redis_url)
                await client.delete(stream)
                await client.aclose()
    latencies.sort()
    n = len(latencies)
    return {
        "bench": "journal",
        "backend": backend,
        "submitters": submitters,
        "commands": n,
        "commands_per_s": round(n / elapsed),
        "p50_ms": round(latencies[n // 2] / 1e6, 3),
        "p99_ms": round(latencies[int(n * 0.99)] / 1e6, 3),
        "mean_batch": round(n / max(batches, 1), 1),
    }

"""In-memory apply rate of a ledger workload: holds, posts, voids and transfers over N accounts.

The workload is generated once (on a scratch engine, so post/void name real holds), then applied
to a fresh engine without per-command timing (throughput), and to another with it (latency).
Both must end with the same state_hash: the bench doubles as a determinism check.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from cashmarkets.core.commands import Command, Deposit, PlaceHold, PostHold, TransferFunds, VoidHold
from cashmarkets.core.engine import Engine
from cashmarkets.core.results import Accepted, TransfersDone
from cashmarkets.ops import gcpolicy
from cashmarkets.runtime import forksnap


def workload(accounts: int, commands: int, seed: int) -> list[Command]:
    rng = random.Random(seed)
    scratch = Engine()
    out: list[Command] = []
    holds: list[int] = []

    def add(cmd: Command) -> None:
        cmd.seq = scratch.seq + 1
        cmd.ts_ns = cmd.seq * 1000
        result, _ = scratch.apply(cmd)
        out.append(cmd)
        if isinstance(cmd, PlaceHold) and isinstance(result, Accepted):
            assert isinstance(result.data, TransfersDone)
            holds.append(result.data.transfer_ids[0])

    for i in range(accounts):
        add(Deposit(command_id=f"fund-{i}", owner=f"user-{i}", asset="USDC", amount=10**12))
    for i in range(commands):
        roll = rng.random()
        owner = f"user-{rng.randrange(accounts)}"
        cid = f"c-{i}"
        if roll < 0.35 or not holds:
            add(PlaceHold(command_id=cid, owner=owner, asset="USDC", amount=rng.randrange(1, 10**6)))
        elif roll < 0.55:
            add(PostHold(command_id=cid, hold_id=holds.pop(rng.randrange(len(holds))), amount=0))
        elif roll < 0.70:
            add(VoidHold(command_id=cid, hold_id=holds.pop(rng.randrange(len(holds)))))
        else:
            to = f"user-{rng.randrange(accounts)}"
            add(
                TransferFunds(
                    command_id=cid,
                    from_owner=owner,
                    to_owner=to,
                    asset="USDC",
                    amount=rng.randrange(1, 10**4),
                )
            )
    return out


def run(accounts: int = 10_000, commands: int = 300_000, seed: int = 1) -> dict[str, object]:
    cmds = workload(accounts, commands, seed)
    setup, timed = cmds[:accounts], cmds[accounts:]

    # The same GC policy as the runtime: thresholds, and the loaded state frozen.
    gcpolicy.tune()
    engine = Engine()
    for cmd in setup:
        engine.apply(cmd)
    gcpolicy.freeze_survivors()
    apply = engine.apply
    start = time.perf_counter()
    for cmd in timed:
        apply(cmd)
    elapsed = time.perf_counter() - start

    latency_engine = Engine()
    for cmd in setup:
        latency_engine.apply(cmd)
    gcpolicy.freeze_survivors()
    apply = latency_engine.apply
    clock = time.perf_counter_ns
    samples = [0] * len(timed)
    for i, cmd in enumerate(timed):
        t0 = clock()
        apply(cmd)
        samples[i] = clock() - t0
    samples.sort()
    snapshot = asyncio.run(snapshot_figures(engine))
    state_hash = engine.state_hash()
    assert state_hash == latency_engine.state_hash(), "same commands gave different states"
    return {
        "bench": "engine",
        "accounts": accounts,
        "commands": len(timed),
        "commands_per_s": round(len(timed) / elapsed),
        "p50_us": round(samples[len(samples) // 2] / 1000, 2),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 2),
        "max_us": round(samples[-1] / 1000, 2),
        "state_hash": state_hash,
        **snapshot,
    }


async def snapshot_figures(engine: Engine) -> dict[str, object]:
    """What a snapshot of this state costs the event loop: inline encode vs the fork stall."""
    start = time.perf_counter()
    data = engine.snapshot()
    inline_ms = (time.perf_counter() - start) * 1000
    figures: dict[str, object] = {
        "snapshot_mb": round(len(data) / 1e6, 2),
        "snapshot_inline_ms": round(inline_ms, 1),
    }
    if forksnap.supported():
        stalls: list[float] = []

        async def ticker() -> None:
            # The longest gap between two loop iterations is the stall a command would see.
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0)
                now = time.perf_counter()
                stalls.append(now - last)
                last = now

        with tempfile.TemporaryDirectory() as tmp:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            start = time.perf_counter()
            forked = await forksnap.capture(engine.snapshot, Path(tmp), "bench")
            total_ms = (time.perf_counter() - start) * 1000
            task.cancel()
        assert forked == data, "the forked child encoded a different state"
        figures["snapshot_fork_max_loop_stall_ms"] = round(max(stalls) * 1000, 1)
        figures["snapshot_fork_total_ms"] = round(total_ms, 1)
    return figures

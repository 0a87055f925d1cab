"""The projector under SIGKILL: rows equal the engine's events exactly once.

A journal is filled with a mixed workload; then `cashmarkets projector` runs as a separate
process and is killed with SIGKILL at random moments while it projects, then restarted, until
it catches up. The SQL tables must then equal what a clean replay of the log produces: every
transfer once (none lost, none doubled), every account's totals, every withdrawal's state.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cashmarkets.bootstrap import build_runtime, store_url
from cashmarkets.core.commands import (
    CompleteWithdrawal,
    Deposit,
    PlaceHold,
    PostHold,
    RequestWithdrawal,
    TransferFunds,
    VoidHold,
)
from cashmarkets.core.results import Accepted, TransfersDone, WithdrawalState
from cashmarkets.ops.settings import Settings
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.tables import projector_checkpoints
from tests.support.projection_state import actual_state, expected_state

COMMANDS = 12_000
KILLS = 6


async def fill(settings: Settings) -> int:
    await migrate.upgrade(store_url(settings))
    runtime = build_runtime(settings)
    await runtime.start()
    rng = random.Random(5)
    holds: list[int] = []
    pending_withdrawals: list[int] = []
    sent = 0
    while sent < COMMANDS:
        batch = []
        for _ in range(200):
            sent += 1
            user = f"u{rng.randrange(40)}"
            roll = rng.random()
            cid = f"c{sent}"
            if roll < 0.3:
                batch.append(
                    Deposit(command_id=cid, owner=user, asset="USDC", amount=rng.randrange(1, 10_000))
                )
            elif roll < 0.5:
                batch.append(
                    TransferFunds(
                        command_id=cid,
                        from_owner=user,
                        to_owner=f"u{rng.randrange(40)}",
                        asset="USDC",
                        amount=rng.randrange(1, 500),
                    )
                )
            elif roll < 0.7 or not holds:
                batch.append(
                    PlaceHold(command_id=cid, owner=user, asset="USDC", amount=rng.randrange(1, 300))
                )
            elif roll < 0.8:
                batch.append(PostHold(command_id=cid, hold_id=holds.pop(), amount=0))
            elif roll < 0.88:
                batch.append(VoidHold(command_id=cid, hold_id=holds.pop()))
            elif roll < 0.95 or not pending_withdrawals:
                batch.append(
                    RequestWithdrawal(
                        command_id=cid, owner=user, asset="USDC", amount=5, destination=f"d{sent}"
                    )
                )
            else:
                batch.append(
                    CompleteWithdrawal(command_id=cid, hold_id=pending_withdrawals.pop(), reference="tx")
                )
        for cmd, result in zip(batch, await asyncio.gather(*(runtime.submit(c) for c in batch)), strict=True):
            if (
                isinstance(result, Accepted)
                and isinstance(cmd, PlaceHold)
                and isinstance(result.data, TransfersDone)
            ):
                holds.append(result.data.transfer_ids[0])
            accepted = isinstance(result, Accepted)
            if accepted and isinstance(result.data, WithdrawalState) and result.data.status == "pending":
                pending_withdrawals.append(result.data.hold_id)
    seq = runtime.engine.seq
    await runtime.stop()
    return seq


async def checkpoint(url: str) -> int:
    db = create_engine(url)
    try:
        async with db.connect() as conn:
            row = (await conn.execute(select(projector_checkpoints.c.seq))).first()
        return 0 if row is None else int(row.seq)
    finally:
        await db.dispose()


def projector(settings_env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab")  # noqa: SIM115 - the child keeps it; closed when the test ends
    return subprocess.Popen(
        [sys.executable, "-m", "cashmarkets.cli", "projector"],
        env={**os.environ, **settings_env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def run_with_kills(env: dict[str, str], url: str, final_seq: int, tmp_path: Path) -> int:
    rng = random.Random(9)
    kills = 0
    deadline = time.monotonic() + 240
    log_path = tmp_path / "projector.log"
    while True:
        # Counted before the start: a child that restores quickly must not be missed.
        restored = log_path.read_text().count("projector restored") if log_path.exists() else 0
        proc = projector(env, log_path)
        if kills < KILLS:
            # Wait until it has started projecting, then kill it somewhere inside its batches. The
            # delay is short: a fast replica would otherwise finish the log before the last kill.
            start = asyncio.run(checkpoint(url))
            while (
                time.monotonic() < deadline and asyncio.run(checkpoint(url)) == start and proc.poll() is None
            ):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.05))
            assert asyncio.run(checkpoint(url)) < final_seq, f"the log was projected before kill {kills + 1}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            continue
        # Up and running (signal handlers installed) before it is asked to stop...
        while log_path.read_text().count("projector restored") == restored:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "projector did not start"
            time.sleep(0.05)
        # ...and caught up with the whole log.
        while asyncio.run(checkpoint(url)) < final_seq:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "projector did not catch up"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        return kills


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_projector_killed_mid_batch_projects_every_event_exactly_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    env = {
        "CASHMARKETS_DATA_DIR": str(data_dir),
        "CASHMARKETS_SNAPSHOT_EVERY_COMMANDS": "2500",
        # Small batches: the projection takes many transactions, so kills land inside it.
        "CASHMARKETS_PROJECTOR_BATCH_RECORDS": "150",
    }
    if backend == "postgres":
        env["CASHMARKETS_DATABASE_URL"] = request.getfixturevalue("pg_url")
    settings = Settings.from_env(env)
    url = store_url(settings)
    final_seq = asyncio.run(fill(settings))
    assert asyncio.run(checkpoint(url)) == 0
    kills = run_with_kills(env, url, final_seq, tmp_path)
    assert kills == KILLS
    expected = asyncio.run(expected_state(settings.journal_path))
    actual = asyncio.run(actual_state(url))
    assert len(actual[0]) == len(expected[0]) > COMMANDS // 2
    assert actual[0] == expected[0], "transfer rows differ from the engine's events"
    assert actual[1] == expected[1], "account totals differ"
    assert actual[2] == expected[2] and len(expected[2]) > 50, "withdrawals differ"

"""Shared by the chart game's integration tests: a fast game on a real runtime (SQLite journal),
playing rounds until they settle, their verification documents, and the standalone verifier."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cashmarkets.core.engine import Engine
from cashmarkets.core.products.chartgame import (
    CandleMade,
    ChainCommitted,
    ChartgameConfig,
    ChartgameProduct,
    GameConfig,
    RoundChanged,
)
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.runtime.chart_scheduler import ChartScheduler
from cashmarkets.runtime.runner import Runtime, RuntimeConfig
from cashmarkets.store.chart_queries import verification_document
from cashmarkets.store.snapshots import SnapshotStore

TOOL = Path(__file__).resolve().parents[2] / "tools" / "verify_round.py"
GAME = GameConfig(
    game="fast",
    name="fast",
    candle_interval_ms=5,
    candles_per_round=30,
    beacon_genesis_s=int(time.time()) - 10,
    beacon_period_s=1,
)


def runtime(tmp_path: Path) -> Runtime:
    return Runtime(
        Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))]),
        SqliteJournal(tmp_path / "journal.db"),
        SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/store.db"),
        RuntimeConfig(),
        scratch_dir=tmp_path,
    )


def settled_of(events: list[Any]) -> list[RoundChanged]:
    return [e for e in events if isinstance(e, RoundChanged) and e.round.status == "settled"]


async def play_until_settled(rt: Runtime, scheduler: ChartScheduler, events: list[Any], rounds: int) -> None:
    """Run the scheduler until `rounds` rounds settled (10 s at most), then stop it and the runtime."""
    task = asyncio.create_task(scheduler.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if len(settled_of(events)) >= rounds:
                break
    finally:
        await scheduler.stop()
        await asyncio.wait_for(task, 5)
        await rt.stop()


def round_document(
    game: GameConfig, settled: RoundChanged, events: list[Any], committed: ChainCommitted, public_key: bytes
) -> dict[str, Any]:
    """A settled round's verification document, from the engine's events."""
    round_no = settled.round.round_no
    candles = [e.candle for e in events if isinstance(e, CandleMade) and e.round_no == round_no]
    return verification_document(
        game,
        settled.round,
        settled.seed,
        settled.beacons,
        candles,
        committed.commitment,
        committed.length,
        public_key,
        settled.onchain,
        committed.onchain_txn,
    )


def run_tool(path: Path, *args: str) -> int:
    """tools/verify_round.py on a document: its exit code (0 fair, 1 not, 2 checks skipped)."""
    cmd = [sys.executable, str(TOOL), str(path), *args]
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode

"""`cashmarkets replay --verify`: exit 0 on a healthy data directory, non-zero on a tampered one."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cashmarkets.bootstrap import build_runtime
from cashmarkets.core.commands import Deposit, PlaceHold, PostHold, TransferFunds
from cashmarkets.core.products.leverage import LeverageProduct
from cashmarkets.log.sqlite import GENESIS_CHAIN, chain_next
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.verify import verify as verify_in_process

# A new log starts with one SetRules per product (decision 023): leverage, spot, chartgame.
GENESIS_RECORDS = 3


async def fill(data_dir: Path) -> str:
    runtime = build_runtime(Settings.from_env({}, data_dir=data_dir, snapshot_every_commands=50))
    await runtime.start()
    for i in range(120):
        await runtime.submit(Deposit(command_id=f"d{i}", owner=f"u{i % 7}", asset="USDC", amount=1000 + i))
        await runtime.submit(
            TransferFunds(
                command_id=f"t{i}",
                from_owner=f"u{i % 7}",
                to_owner=f"u{(i + 1) % 7}",
                asset="USDC",
                amount=10,
            )
        )
    result = await runtime.submit(PlaceHold(command_id="h", owner="u1", asset="USDC", amount=500))
    await runtime.submit(PostHold(command_id="p", hold_id=result.data.transfer_ids[0], amount=200))  # type: ignore[union-attr]
    state_hash = runtime.engine.state_hash()
    await runtime.stop()
    return state_hash


def verify(data_dir: Path) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "replay", "--verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        # PYTHONPATH kept: the CLI must run the code under test (a worktree's, not an installed one).
        env={"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture()
def data_dir(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path, asyncio.run(fill(tmp_path))


def test_healthy_data_directory_verifies(data_dir: tuple[Path, str]) -> None:
    path, state_hash = data_dir
    code, report = verify(path)
    assert code == 0, report
    assert report["ok"] is True
    assert report["state_hash"] == state_hash
    assert report["commands_replayed"] == GENESIS_RECORDS + 242
    assert len(report["snapshots"]) >= 2  # type: ignore[arg-type]
    assert all(s["ok"] for s in report["snapshots"])  # type: ignore[union-attr]


def test_altered_journal_record_breaks_the_hash_chain(data_dir: tuple[Path, str]) -> None:
    path, _ = data_dir
    with sqlite3.connect(path / "journal.db") as db:
        pos = GENESIS_RECORDS + 3
        data = bytes(db.execute("SELECT data FROM journal WHERE pos = ?", (pos,)).fetchone()[0])
        db.execute("UPDATE journal SET data = ? WHERE pos = ?", (data.replace(b"u1", b"u9"), pos))
    code, report = verify(path)
    assert code == 1
    assert any("hash chain" in p for p in report["problems"])  # type: ignore[union-attr]


def test_rewritten_journal_with_a_valid_chain_fails_against_the_snapshots(data_dir: tuple[Path, str]) -> None:
    """A forger who recomputes the chain still cannot match the snapshots' state hashes."""
    path, _ = data_dir
    with sqlite3.connect(path / "journal.db") as db:
        rows = db.execute("SELECT pos, data FROM journal ORDER BY pos").fetchall()
        chain = GENESIS_CHAIN
        for pos, data in rows:
            data = bytes(data)
            if pos == GENESIS_RECORDS + 1:
                cmd = msgspec.msgpack.decode(data)
                cmd["amount"] += 1_000_000  # a bigger first deposit
                data = msgspec.msgpack.encode(cmd)
            chain = chain_next(chain, data)
            db.execute("UPDATE journal SET data = ?, chain = ? WHERE pos = ?", (data, chain, pos))
    code, report = verify(path)
    assert code == 1
    assert any("differs from its snapshot" in p for p in report["problems"])  # type: ignore[union-attr]


def test_damaged_snapshot_is_reported(data_dir: tuple[Path, str]) -> None:
    path, _ = data_dir
    with sqlite3.connect(path / "store.db") as db:
        snap_id, data = db.execute(
            "SELECT id, data FROM engine_snapshots ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        damaged = bytes(data[:-1]) + bytes([data[-1] ^ 1])
        db.execute("UPDATE engine_snapshots SET data = ? WHERE id = ?", (damaged, snap_id))
    code, report = verify(path)
    assert code == 1
    assert any("do not match its stored hash" in p for p in report["problems"])  # type: ignore[union-attr]


def test_recovery_skips_a_damaged_snapshot(data_dir: tuple[Path, str]) -> None:
    path, state_hash = data_dir
    with sqlite3.connect(path / "store.db") as db:
        db.execute(
            "UPDATE engine_snapshots SET data = x'00' WHERE seq = (SELECT max(seq) FROM engine_snapshots)"
        )

    async def recover() -> tuple[str, int]:
        runtime = build_runtime(Settings.from_env({}, data_dir=path))
        await runtime.start()
        out = runtime.engine.state_hash(), runtime.recovered_from_seq
        await runtime.stop(snapshot=False)
        return out

    recovered_hash, from_seq = asyncio.run(recover())
    assert recovered_hash == state_hash
    assert 0 < from_seq < GENESIS_RECORDS + 242


def test_a_rules_version_other_than_the_logs_fails_verification(
    data_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 023: the log pins leverage rules version 1; a build that runs version 2 cannot
    vouch for what replaying it produces."""
    path, _ = data_dir
    monkeypatch.setattr(LeverageProduct, "rules_version", 2)
    report = asyncio.run(verify_in_process(Settings.from_env({}, data_dir=path)))
    assert not report.ok
    assert report.problems == ["leverage rules: the log has version 1, this build runs version 2"]


def test_a_log_from_before_pinned_rules_replays_under_its_implicit_genesis(tmp_path: Path) -> None:
    """Decision 023: a log without SetRules (written before them) runs on the old defaults as its
    implicit genesis (rules version 1): a restart does not log a genesis into it, recovers the
    same state, and verification passes with its snapshots compared as before."""

    async def write_old_log() -> str:
        runtime = build_runtime(Settings.from_env({}, data_dir=tmp_path))
        runtime.config = msgspec.structs.replace(runtime.config, genesis=False)  # as before 023
        await runtime.start()
        for i in range(5):
            await runtime.submit(Deposit(command_id=f"d{i}", owner="u", asset="USDC", amount=10 + i))
        state_hash = runtime.engine.state_hash()
        await runtime.stop()
        return state_hash

    async def restart() -> tuple[str, int, dict[str, object]]:
        runtime = build_runtime(Settings.from_env({}, data_dir=tmp_path))
        await runtime.start()
        out = runtime.engine.state_hash(), runtime.engine.seq, dict(runtime.engine.rules)
        await runtime.stop(snapshot=False)
        return out

    old_hash = asyncio.run(write_old_log())
    assert asyncio.run(restart()) == (old_hash, 5, {})
    code, report = verify(tmp_path)
    assert code == 0, report
    assert report["state_hash"] == old_hash and report["snapshots"]

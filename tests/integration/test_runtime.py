"""The runtime on a real journal: group commit, acknowledgement after durability, idempotent
resubmission, snapshots by count, back-pressure, and a failed append."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from cashmarkets.core.commands import COMMAND_ID_LENGTH_MAX, Deposit, TransferFunds
from cashmarkets.core.engine import Engine
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.log.base import Position
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.runtime import runner
from cashmarkets.runtime.runner import Runtime, RuntimeConfig, RuntimeFailed
from cashmarkets.store.snapshots import SnapshotStore


def make_runtime(tmp_path: Path, **config: object) -> Runtime:
    return Runtime(
        Engine(),
        SqliteJournal(tmp_path / "journal.db"),
        SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/store.db"),
        RuntimeConfig(**config),  # type: ignore[arg-type]
        scratch_dir=tmp_path,
    )


async def test_concurrent_submissions_share_batches_and_all_land(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    await runtime.start()
    results = await asyncio.gather(
        *(
            runtime.submit(Deposit(command_id=f"d{i}", owner=f"u{i % 5}", asset="USDC", amount=i + 1))
            for i in range(300)
        )
    )
    assert all(isinstance(r, Accepted) for r in results)
    assert sorted(r.seq for r in results) == list(range(1, 301))
    # 300 commands submitted at once must not take 300 fsyncs.
    assert runtime.stats["batches"] < 30
    balance = sum(runtime.engine.ledger.account(f"u{k}", "USDC").balance for k in range(5))  # type: ignore[union-attr]
    assert balance == sum(range(1, 301))
    await runtime.stop()
    records = []
    journal = SqliteJournal(tmp_path / "journal.db")
    await journal.open()
    records = await journal.read_from(None, 1000)
    await journal.close()
    assert len(records) == 300


async def test_resubmitting_a_command_id_returns_the_first_result(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    await runtime.start()
    first = await runtime.submit(Deposit(command_id="same", owner="a", asset="USDC", amount=100))
    again = await runtime.submit(Deposit(command_id="same", owner="a", asset="USDC", amount=999))
    assert again == first
    assert runtime.engine.ledger.account("a", "USDC").balance == 100  # type: ignore[union-attr]
    rejected = await runtime.submit(
        TransferFunds(command_id="t", from_owner="a", to_owner="b", asset="USDC", amount=101)
    )
    assert isinstance(rejected, Rejected) and rejected.code == "insufficient_funds"
    await runtime.stop()


@pytest.mark.parametrize("fork", [True, False], ids=["forked-capture", "inline-capture"])
async def test_snapshot_every_n_commands_and_recovery_replays_only_the_tail(
    tmp_path: Path, fork: bool
) -> None:
    runtime = make_runtime(tmp_path, snapshot_every_commands=25, snapshot_fork=fork)
    await runtime.start()
    for i in range(60):
        await runtime.submit(Deposit(command_id=f"d{i}", owner="a", asset="USDC", amount=1))
    # A count-triggered snapshot while another is still being written is skipped (one at a time),
    # so under load there may be one or two: wait for the writes, then require at least one.
    for _ in range(1_000):
        if runtime.stats["snapshots"] >= 1 and not runtime._snapshotting:
            break
        await asyncio.sleep(0.01)
    assert runtime.stats["snapshots"] >= 1
    expected = runtime.engine.state_hash()
    await runtime.stop(snapshot=False)

    assert not list(tmp_path.glob(".snapshot-*")), "scratch files left behind"
    again = make_runtime(tmp_path)
    await again.start()
    assert again.engine.state_hash() == expected
    assert again.recovered_from_seq >= 25
    assert again.replayed == 60 - again.recovered_from_seq
    await again.stop()


async def test_stop_takes_its_last_snapshot_after_one_still_being_written(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, snapshot_every_commands=10, snapshot_fork=False)
    await runtime.start()
    save = runtime.snapshots.save
    saving = asyncio.Event()

    async def slow_save(record: object) -> None:  # the real store, just slow to write
        saving.set()
        await asyncio.sleep(0.3)
        await save(record)  # type: ignore[arg-type]

    runtime.snapshots.save = slow_save  # type: ignore[method-assign]
    for i in range(10):
        await runtime.submit(Deposit(command_id=f"d{i}", owner="a", asset="USDC", amount=1))
    await asyncio.wait_for(saving.wait(), 5)  # the snapshot at 10 is being written...
    for i in range(10, 15):
        await runtime.submit(Deposit(command_id=f"d{i}", owner="a", asset="USDC", amount=1))
    await runtime.stop()  # ...when stop wants the last one, at 15
    assert runtime.stats["snapshots"] == 2
    store = SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/store.db")
    await store.open()
    newest = await store.newest_intact()
    await store.close()
    assert newest is not None and newest.seq == 15


async def test_back_pressure_refuses_past_the_pending_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PENDING_COMMANDS_MAX", 4)
    runtime = make_runtime(tmp_path)
    await runtime.start()
    tasks = [
        asyncio.create_task(runtime.submit(Deposit(command_id=f"d{i}", owner="a", asset="USDC", amount=1)))
        for i in range(4)
    ]
    await asyncio.sleep(0)
    with pytest.raises(runner.Overloaded):
        await runtime.submit(Deposit(command_id="one-too-many", owner="a", asset="USDC", amount=1))
    assert all(isinstance(r, Accepted) for r in await asyncio.gather(*tasks))
    await runtime.stop()


async def test_bad_command_ids_are_refused_before_the_log(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    await runtime.start()
    for bad in ("", "x" * (COMMAND_ID_LENGTH_MAX + 1)):
        with pytest.raises(ValueError, match="command_id"):
            await runtime.submit(Deposit(command_id=bad, owner="a", asset="USDC", amount=1))
    assert runtime.engine.seq == 0
    await runtime.stop()


class BrokenJournal(SqliteJournal):
    async def append(self, records: Sequence[bytes]) -> list[Position]:
        raise OSError("disk full")


async def test_a_failed_append_fails_the_batch_and_stops_the_runtime(tmp_path: Path) -> None:
    runtime = Runtime(
        Engine(),
        BrokenJournal(tmp_path / "j.db"),
        SnapshotStore(f"sqlite+aiosqlite:///{tmp_path}/s.db"),
        scratch_dir=tmp_path,
    )
    await runtime.start()
    with pytest.raises(RuntimeFailed, match="disk full"):
        await runtime.submit(Deposit(command_id="d", owner="a", asset="USDC", amount=1))
    # Nothing was applied: an unlogged command must never change the state.
    assert runtime.engine.seq == 0
    await asyncio.sleep(0)
    with pytest.raises(RuntimeFailed):
        await runtime.submit(Deposit(command_id="e", owner="a", asset="USDC", amount=1))
    await runtime.stop()


async def test_a_bug_while_applying_fails_the_waiting_callers_instead_of_hanging(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    await runtime.start()
    runtime.engine.seq = 5  # corrupt the engine: the next stamped seq will not match

    def broken_apply(cmd: object) -> object:
        raise AssertionError("seq gap")

    runtime.engine.apply = broken_apply  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeFailed, match="seq gap"):
        await asyncio.wait_for(runtime.submit(Deposit(command_id="d", owner="a", asset="USDC", amount=1)), 5)
    await runtime.stop(snapshot=False)


async def test_an_unloggable_command_is_refused_alone_and_the_runtime_keeps_going(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    await runtime.start()
    bad = Deposit(command_id="huge", owner="a", asset="USDC", amount=2**70)  # beyond MessagePack's ints
    good = Deposit(command_id="ok", owner="a", asset="USDC", amount=5)
    results = await asyncio.gather(runtime.submit(bad), runtime.submit(good), return_exceptions=True)
    assert isinstance(results[0], runner.BadCommandError)
    assert isinstance(results[1], Accepted) and results[1].seq == 1
    assert runtime.running
    later = await runtime.submit(Deposit(command_id="later", owner="a", asset="USDC", amount=1))
    assert isinstance(later, Accepted) and later.seq == 2
    await runtime.stop()


async def test_a_caller_that_stops_waiting_does_not_withdraw_its_command(tmp_path: Path) -> None:
    from cashmarkets.runtime.bus import CommandTimeout, EmbeddedBus

    runtime = make_runtime(tmp_path)
    await runtime.start()
    bus = EmbeddedBus(runtime)
    with pytest.raises(CommandTimeout):
        await bus.submit(Deposit(command_id="gave-up", owner="a", asset="USDC", amount=7), timeout_s=0)
    abandoned = runtime.enqueue(Deposit(command_id="cancelled", owner="a", asset="USDC", amount=5))
    abandoned.cancel()
    # The next command shares or follows their batch; both abandoned ones are in the log all the same.
    after = await bus.submit(Deposit(command_id="after", owner="a", asset="USDC", amount=1), timeout_s=5)
    assert isinstance(after, Accepted) and after.seq == 3
    assert runtime.engine.ledger.account("a", "USDC").balance == 13  # type: ignore[union-attr]
    assert isinstance(runtime.engine.result_of("gave-up"), Accepted)
    await runtime.stop()


async def test_a_replica_leaves_the_snapshot_takers_scratch_files_alone(tmp_path: Path) -> None:
    """A gateway or chartgame replica sharing the engine's data directory must not delete the
    engine's snapshot being written (forksnap); the snapshot taker clears its own leftovers."""
    leftover = tmp_path / ".snapshot-7-12345.tmp"
    leftover.write_bytes(b"half a snapshot")
    replica = make_runtime(tmp_path, snapshots=False)
    await replica.start()
    await replica.stop(snapshot=False)
    assert leftover.exists()
    taker = make_runtime(tmp_path)
    await taker.start()
    await taker.stop()
    assert not leftover.exists()

"""SIGKILL the runtime at random moments under load; nothing acknowledged may be lost.

For each backend: start the child (tests/integration/crash_child.py) on one data directory,
kill it with SIGKILL at a random moment (sometimes during recovery itself), start it again, at
least 20 times. Then rebuild the state from the log alone and check:
  - every command whose acknowledgement the child printed is in the state, with the same outcome
    (accepted/rejected) and the same seq;
  - every state the child recovered to (its `RECOVERED seq hash` lines) equals a clean replay of
    the log up to that seq;
  - the ledger's invariants hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.results import Accepted
from cashmarkets.log.base import CommandLog
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.runtime.runner import replay

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = int(os.environ.get("CASHMARKETS_CRASH_KILLS", "20"))
REDIS_URL = "redis://127.0.0.1:6379/0"


class Child:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self.recovered = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            # A line cut by the kill has no newline: the child never finished telling it.
            if not raw.endswith(b"\n"):
                break
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line.startswith("RECOVERED"):
                self.recovered.set()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


def run_kills(data_dir: Path, extra: list[str], kills: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    for round_no in range(kills + 1):
        child = Child(["--data-dir", str(data_dir), "--run-id", f"r{round_no}", "--seed", str(seed), *extra])
        if round_no < kills and rng.random() < 0.2:
            # Kill during start-up or recovery.
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            assert child.recovered.wait(timeout=60), "child did not recover"
            if round_no == kills:
                # The last run only proves the final recovery; let it work a little.
                time.sleep(0.3)
            else:
                time.sleep(rng.uniform(0.0, 0.8))
        assert child.proc.poll() is None, f"child exited by itself with {child.proc.returncode}"
        child.kill()
        lines.extend(child.lines)
    return lines


async def check(log: CommandLog, lines: list[str]) -> tuple[int, int]:
    acks = [line.split() for line in lines if line.startswith("ACK")]
    recovered = sorted(
        {(int(p[1]), p[2]) for p in (line.split() for line in lines if line.startswith("RECOVERED"))}
    )
    assert len(acks) > 500, f"only {len(acks)} acknowledgements: the load did not run"
    await log.open()
    engine = build_engine()
    after = None
    try:
        for seq, state_hash in recovered:
            _, after = await replay(engine, log, after, until_seq=seq)
            assert engine.seq == seq, f"the log ends before a state the child recovered to ({seq})"
            assert engine.state_hash() == state_hash, (
                f"recovered state at seq {seq} differs from a clean replay"
            )
        await replay(engine, log, after)
    finally:
        await log.close()
    engine.ledger.check_invariants()
    lost = []
    for _, cid, outcome, seq in acks:
        result = engine.result_of(cid)
        if result is None:
            lost.append(cid)
            continue
        assert result.seq == int(seq), f"{cid}: acknowledged at seq {seq}, log has it at {result.seq}"
        assert isinstance(result, Accepted) == (outcome == "A"), f"{cid}: outcome changed"
    assert not lost, f"{len(lost)} acknowledged commands lost, e.g. {lost[:5]}"
    return len(acks), len(recovered)


@pytest.mark.slow
def test_sigkill_sqlite_journal_loses_no_acknowledged_command(tmp_path: Path) -> None:
    lines = run_kills(tmp_path, [], KILLS, seed=11)
    _acks, recoveries = asyncio.run(check(SqliteJournal(tmp_path / "journal.db"), lines))
    assert recoveries >= KILLS * 0.6


@pytest.mark.slow
@pytest.mark.redis
def test_sigkill_redis_streams_loses_no_acknowledged_command(tmp_path: Path) -> None:
    stream = f"cashmarkets:test:crash:{uuid.uuid4().hex}"
    try:
        lines = run_kills(tmp_path, ["--redis-url", REDIS_URL, "--stream", stream], KILLS, seed=12)
        _acks, recoveries = asyncio.run(check(RedisStreamLog(REDIS_URL, stream), lines))
        assert recoveries >= KILLS * 0.6
    finally:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(stream)

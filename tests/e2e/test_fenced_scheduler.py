"""Black-box, distributed mode: the chart scheduler is a fenced singleton (docs/decisions/018).

Two `cashmarkets chartgame` processes, an engine, a private PostgreSQL (the shared one is never
restarted) and the shared Redis (a stream of this test's own). The first scheduler reaches the
database through a TCP proxy. In the middle of a round the database restarts and the proxy stays
cut: the first scheduler cannot renew its lease, stops acting, and only then does the second one
take the lease (a higher token), claim it in the engine and finish the same round. A command
stamped with the first one's token is refused by the engine (stale_fence); no round is run twice.
When the second one stops, the first takes over again with a higher token still.

The test follows the command log with its own engine replica: same log, same results."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cashmarkets.bootstrap import build_engine
from cashmarkets.core import codes
from cashmarkets.core.commands import ClaimFence
from cashmarkets.core.products.chartgame import (
    FENCE_ROLE,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartMixBeacon,
    ChartTick,
)
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.log.redis_streams import RedisStreamLog
from cashmarkets.runtime.distributed import RedisBus
from tests.e2e.processes import REDIS_URL, Proc
from tests.support.private_pg import PrivatePostgres, TcpProxy, private_postgres

pytestmark = [pytest.mark.redis, pytest.mark.slow]

GAME = "btc-30s"
SCHEDULER_COMMANDS = (ChartCommitChain, ChartAnnounceRound, ChartBeginRound, ChartMixBeacon, ChartTick)


class Follower:
    """An engine replica of the test's own over the Redis stream, keeping every (command, result)."""

    def __init__(self, stream: str) -> None:
        self.log = RedisStreamLog(REDIS_URL, stream)
        self.engine = build_engine()
        self.after: str | None = None
        self.applied: list[tuple[Any, Any]] = []

    async def catch_up(self) -> None:
        decode = self.engine.codec.command_decoder.decode
        while page := await self.log.read_from(self.after, 1000):
            for record in page:
                cmd = decode(record.data)
                if cmd.seq == 0:
                    cmd.seq = self.engine.seq + 1
                cmd.ts_ns = max(cmd.ts_ns, self.engine.ts_ns)
                result, _ = self.engine.apply(cmd)
                self.applied.append((cmd, result))
            self.after = page[-1].position

    @property
    def round(self) -> Any:
        return self.engine.products["chartgame"].state[GAME].round

    def claims(self) -> list[tuple[int, int]]:
        """(token, seq) of every accepted ClaimFence of the chart scheduler."""
        return [
            (c.token, c.seq)
            for c, r in self.applied
            if isinstance(c, ClaimFence) and c.role == FENCE_ROLE and isinstance(r, Accepted)
        ]

    async def until(self, what: str, check: Any, timeout_s: float, *procs: Proc) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.catch_up()
            found = check()
            if found:
                return found
            for p in procs:
                assert p.alive(), f"{p.log_path.name} exited:\n{p.output()}"
            await asyncio.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout_s} s\n" + "\n".join(p.output() for p in procs))


def terms(proc: Proc) -> list[int]:
    """The lease tokens under which `proc` ran the scheduler (its "chart scheduler running" lines)."""
    found = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"chart scheduler running"' in line:
            found.append(int(json.loads(line)["token"]))
    return found


async def wait_output(proc: Proc, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.output():
        assert proc.alive() and time.monotonic() < deadline, f"no {text!r}:\n{proc.output()}"
        await asyncio.sleep(0.1)


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


async def test_a_postgres_restart_hands_the_rounds_to_the_standby_scheduler(
    tmp_path: Path, pg: PrivatePostgres
) -> None:
    direct = pg.create_database("cm")
    stream = f"cashmarkets:test:{uuid.uuid4().hex}"
    env = {
        "CASHMARKETS_DATABASE_URL": direct,
        "CASHMARKETS_REDIS_URL": REDIS_URL,
        "CASHMARKETS_REDIS_STREAM": stream,
        "CASHMARKETS_JWT_SECRET": "test-secret-" + "x" * 40,
        "CASHMARKETS_APIKEY_MASTER_KEY": "ab" * 32,
        "CASHMARKETS_BEACON_KEY": "cd" * 32,
        "CASHMARKETS_DATA_DIR": str(tmp_path / "engine"),
        "CASHMARKETS_SNAPSHOT_INTERVAL_S": "1",
        "CASHMARKETS_LEASE_TTL_S": "2",
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    follower = Follower(stream)
    await follower.log.open()
    bus = RedisBus(REDIS_URL, stream, follower.engine.codec)
    procs: list[Proc] = []
    with TcpProxy(pg.port) as proxy:
        try:
            engine = Proc(["engine"], env, tmp_path / "engine.log")
            procs.append(engine)
            # Both schedulers share a data directory: the chains' secrets are there.
            shared = {**env, "CASHMARKETS_DATA_DIR": str(tmp_path / "scheduler")}
            cut_off = {
                **shared,
                "CASHMARKETS_DATABASE_URL": direct.replace(f":{pg.port}/", f":{proxy.port}/"),
            }
            first = Proc(["chartgame"], cut_off, tmp_path / "first.log")
            procs.append(first)
            await follower.until(
                "the first claim", lambda: terms(first) and follower.claims(), 60, engine, first
            )
            second = Proc(["chartgame"], shared, tmp_path / "second.log")
            procs.append(second)
            r = await follower.until(
                "a round open for a while",
                lambda: (
                    follower.round is not None
                    and follower.round.status == "open"
                    and len(follower.round.candles) >= 15
                    and follower.round
                ),
                90,
                engine,
                first,
                second,
            )
            interrupted = r.round_no
            await wait_output(second, "waiting for another holder of the lease", 60)
            assert terms(second) == []
            first_terms = terms(first)
            token_a = first_terms[-1]

            # The database restarts; the first scheduler stays cut off from it.
            proxy.cut()
            await asyncio.to_thread(pg.restart, 1.0)
            await follower.until("the second's term", lambda: terms(second), 60, engine, second)
            [token_b] = terms(second)
            [claim_b_seq] = await follower.until(
                "the second's claim",
                lambda: [seq for token, seq in follower.claims() if token == token_b],
                30,
                engine,
                second,
            )
            assert token_b > token_a
            assert "lease lost: stop acting" in first.output()
            assert terms(first) == first_terms  # it did not get the lease back meanwhile
            # The first had stopped acting before the second claimed: nothing of its lands after.
            late = [
                (c, res)
                for c, res in follower.applied
                if isinstance(c, SCHEDULER_COMMANDS) and c.seq > claim_b_seq and c.fence != token_b
            ]
            assert late == []

            # A command the first had in flight (its token) is refused by the engine, unfenced too.
            await bus.start()
            for stale in (
                ChartTick(command_id="late-tick", game=GAME, round_no=interrupted, fence=token_a),
                ChartAnnounceRound(
                    command_id="late-announce", game=GAME, round_no=interrupted + 1, start_ms=0, fence=token_a
                ),
                ChartTick(command_id="late-unfenced", game=GAME, round_no=interrupted),
            ):
                result = await bus.submit(stale, 10)
                assert isinstance(result, Rejected) and result.code == codes.STALE_FENCE, result
            proxy.heal()

            # The second finishes the interrupted round and plays the next one.
            await follower.until(
                "the next round open",
                lambda: (
                    follower.round is not None
                    and follower.round.round_no > interrupted
                    and follower.round.status == "open"
                ),
                90,
                engine,
                first,
                second,
            )
            await asyncio.sleep(3)  # the first, back in touch with the database, stays a standby
            assert terms(first) == first_terms and terms(second) == [token_b] and first.alive()
            assert max(token for token, _ in follower.claims()) == token_b

            # The second stops cleanly: the first takes over at once, with a higher token still.
            assert second.stop() == 0, second.output()
            await follower.until(
                "the first's new term", lambda: len(terms(first)) > len(first_terms), 30, first
            )
            token_c = terms(first)[-1]
            assert token_c > token_b
            await follower.until(
                "a tick under the new token",
                lambda: any(
                    isinstance(c, ChartTick) and c.fence == token_c and isinstance(res, Accepted)
                    for c, res in follower.applied
                ),
                60,
                engine,
                first,
            )
        finally:
            for p in reversed(procs):  # the schedulers, then the engine
                p.stop()
            await bus.close()
    await follower.catch_up()
    await follower.log.close()

    # No round was run twice: one announce and one begin per round, the interrupted one settled
    # with exactly its candles, from ticks of the first then the second only.
    accepted = [(c, res) for c, res in follower.applied if isinstance(res, Accepted)]
    for kind in (ChartAnnounceRound, ChartBeginRound):
        numbers = [c.round_no for c, _ in accepted if isinstance(c, kind)]
        assert numbers == sorted(set(numbers)), (kind, numbers)
    ticks = [c for c, _ in accepted if isinstance(c, ChartTick) and c.round_no == interrupted]
    candles_per_round = follower.engine.products["chartgame"].games[GAME].candles_per_round
    assert len(ticks) == candles_per_round
    tokens = [c.fence for c in ticks]
    assert tokens == sorted(tokens) and tokens[-1] == token_b and token_a in tokens
    assert all(c.fence == token_b for c in ticks if c.seq > claim_b_seq)
    # Every scheduler command carries the token of the holder whose term it ran in.
    claims = follower.claims()
    for c, _ in accepted:
        if isinstance(c, SCHEDULER_COMMANDS):
            current = max(token for token, seq in claims if seq < c.seq)
            assert c.fence == current, (c, claims)
    refused = [
        c.command_id
        for c, res in follower.applied
        if isinstance(res, Rejected) and res.code == codes.STALE_FENCE
    ]
    assert {"late-tick", "late-announce", "late-unfenced"} <= set(refused)

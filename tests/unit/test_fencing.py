"""Fenced singletons in the engine (docs/decisions/018): ClaimFence, stale tokens refused on the
chart scheduler's commands, rollback, and the fences in the snapshot and state hash."""

from __future__ import annotations

import msgspec
import pytest

from cashmarkets.core import codes
from cashmarkets.core.commands import ClaimFence, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.chartgame import (
    FENCE_ROLE,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameConfig,
    ChartgameProduct,
    ChartMixBeacon,
    ChartTick,
    GameConfig,
)
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.fairness import drand
from cashmarkets.fairness.chain import SeedChain

from .engine_helpers import stamp_apply

GAME = GameConfig(game="g", name="test", candles_per_round=5)
CHAIN = SeedChain(bytes(range(32)), 10)
START_MS = drand.round_time_ms(1000) - 500


@pytest.fixture(params=[True, False], ids=["native", "python"])
def engine(request: pytest.FixtureRequest) -> Engine:
    from cashmarkets.core.engine import EngineConfig

    return Engine(
        EngineConfig(native=request.param),
        products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))],
    )


def claim(engine: Engine, token: int, role: str = FENCE_ROLE) -> Accepted | Rejected:
    result, _ = stamp_apply(
        engine, ClaimFence(command_id=f"claim-{role}-{token}-{engine.seq}", role=role, token=token)
    )
    return result


def chart(engine: Engine) -> bytes:
    return engine.products["chartgame"].snapshot_state()  # type: ignore[no-any-return]


def commit(engine: Engine, fence: int, chain_id: int = 1) -> Accepted | Rejected:
    cmd = ChartCommitChain(
        command_id=f"chain-{chain_id}-{fence}-{engine.seq}",
        game="g",
        chain_id=chain_id,
        commitment=CHAIN.commitment,
        length=10,
        fence=fence,
    )
    result, _ = stamp_apply(engine, cmd)
    return result


def test_a_claim_raises_the_fence_and_a_lower_token_is_refused(engine: Engine) -> None:
    assert isinstance(claim(engine, 3), Accepted)
    assert engine.fences == {FENCE_ROLE: 3}
    assert isinstance(claim(engine, 3), Accepted)  # the holder itself, again
    stale = claim(engine, 2)
    assert isinstance(stale, Rejected) and stale.code == codes.STALE_FENCE
    assert engine.fences == {FENCE_ROLE: 3}
    assert isinstance(claim(engine, 1, role="numbers"), Accepted)  # roles are independent
    assert engine.fences == {FENCE_ROLE: 3, "numbers": 1}
    for bad in (
        ClaimFence(command_id="b1", role="", token=1),
        ClaimFence(command_id="b2", role="x", token=0),
    ):
        result, _ = stamp_apply(engine, bad)
        assert isinstance(result, Rejected) and result.code == codes.BAD_COMMAND


def test_every_scheduler_command_from_a_former_holder_is_refused_and_changes_nothing(engine: Engine) -> None:
    stamp_apply(engine, Deposit(command_id="d", owner="alice", asset="USDC", amount=10**9))
    assert isinstance(commit(engine, fence=0), Accepted)  # unfenced: accepted until the first token
    assert isinstance(claim(engine, 1), Accepted)
    start = ChartAnnounceRound(command_id="a1", game="g", round_no=1, start_ms=START_MS, fence=1)
    assert isinstance(stamp_apply(engine, start)[0], Accepted)
    beacon = engine.products["chartgame"].state["g"].round.beacon_round
    begin = ChartBeginRound(
        command_id="b1", game="g", round_no=1, seed=CHAIN.seed(1), beacon_signature=b"s" * 48, fence=1
    )
    assert isinstance(stamp_apply(engine, begin)[0], Accepted)
    assert isinstance(claim(engine, 2), Accepted)  # the successor takes over mid-round
    before = chart(engine)
    late = [
        ChartTick(command_id="t-old", game="g", round_no=1, fence=1),
        ChartTick(command_id="t-unfenced", game="g", round_no=1),
        ChartMixBeacon(
            command_id="m-old",
            game="g",
            round_no=1,
            beacon_round=beacon + 1,
            beacon_signature=b"m" * 48,
            fence=1,
        ),
        ChartAnnounceRound(command_id="a-old", game="g", round_no=2, start_ms=START_MS, fence=1),
        ChartBeginRound(
            command_id="b-old", game="g", round_no=1, seed=CHAIN.seed(1), beacon_signature=b"s" * 48, fence=1
        ),
    ]
    for cmd in late:
        result, events = stamp_apply(engine, cmd)
        assert isinstance(result, Rejected) and result.code == codes.STALE_FENCE, (cmd, result)
        assert events == []
    assert isinstance(commit(engine, fence=1, chain_id=2), Rejected)
    assert chart(engine) == before
    result, events = stamp_apply(engine, ChartTick(command_id="t-new", game="g", round_no=1, fence=2))
    assert isinstance(result, Accepted) and len(events) == 1
    assert engine.products["chartgame"].state["g"].round.candles[-1].index == 0


def test_a_higher_token_on_a_command_raises_the_fence_unless_the_command_is_rejected(engine: Engine) -> None:
    assert isinstance(claim(engine, 1), Accepted)
    # Rejected for its own reason (no open round): the fence is rolled back with it.
    result, _ = stamp_apply(engine, ChartTick(command_id="t", game="g", round_no=1, fence=5))
    assert isinstance(result, Rejected) and result.code == codes.ROUND_NOT_OPEN
    assert engine.fences == {FENCE_ROLE: 1}
    assert isinstance(commit(engine, fence=4), Accepted)
    assert engine.fences == {FENCE_ROLE: 4}
    assert isinstance(commit(engine, fence=3, chain_id=2), Rejected)


def test_fences_are_in_the_snapshot_and_the_state_hash(engine: Engine) -> None:
    empty = engine.snapshot()
    # Never fenced: the snapshot is the layout from before fencing (7 fields), so older logs and
    # snapshots keep their state hashes.
    assert len(msgspec.msgpack.decode(empty)) == 7
    fresh = Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))])
    assert fresh.state_hash() == engine.state_hash()
    fresh.restore(empty)
    assert fresh.fences == {} and fresh.state_hash() == engine.state_hash()

    twin = Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))])
    for target, token in ((engine, 7), (twin, 6)):
        cmd = ClaimFence(command_id="the-claim", role=FENCE_ROLE, token=token)
        assert isinstance(stamp_apply(target, cmd, ts_ns=1)[0], Accepted)
    assert engine.seq == twin.seq
    assert len(msgspec.msgpack.decode(engine.snapshot())) == 8
    # The same commands but another token: another state.
    assert engine.state_hash() != twin.state_hash()

    restored = Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))])
    restored.restore(engine.snapshot())
    assert restored.fences == {FENCE_ROLE: 7}
    assert restored.state_hash() == engine.state_hash()
    stale = claim(restored, 6)  # the restored engine keeps refusing
    assert isinstance(stale, Rejected) and stale.code == codes.STALE_FENCE


def test_replaying_the_same_log_gives_the_same_fences() -> None:
    def play() -> Engine:
        e = Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))])
        for token in (1, 3, 2, 4):
            claim(e, token)
        commit(e, fence=4)
        return e

    a, b = play(), play()
    assert a.fences == {FENCE_ROLE: 4} and a.state_hash() == b.state_hash()

"""The chart game on the engine: rounds from committed seeds and beacons, candles reproducible
from the recorded inputs alone, rolling entropy, positions, busts, settlement, money, rejections,
rollback and snapshots."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cashmarkets.benchmarks.chartgame import simulate_rtp
from cashmarkets.core import codes
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.ledger import HOUSE, Ledger
from cashmarkets.core.products.chartgame import (
    ESCROW,
    CandleMade,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartClosePosition,
    ChartCommitChain,
    ChartgameConfig,
    ChartgameProduct,
    ChartMixBeacon,
    ChartOpenPosition,
    ChartPositionView,
    ChartTick,
    GameConfig,
    ModelParams,
    OnchainDraw,
    RoundChanged,
    bust_price,
    mixed_key,
    next_candle,
    payout_of,
)
from cashmarkets.core.reconcile import reconcile
from cashmarkets.core.results import Accepted, Rejected
from cashmarkets.fairness import drand
from cashmarkets.fairness.chain import SeedChain
from cashmarkets.fairness.derive import Stream, round_seed

from .engine_helpers import ledger_bytes, stamp_apply

GAME = GameConfig(
    game="g", name="test", candles_per_round=20, stake_min=1, stake_max=10**9, fee_bps=100, max_leverage=100
)
CONFIG = ChartgameConfig(games=(GAME,))
START_MS = drand.round_time_ms(1000) - 500  # half a second before beacon round 1000
CHAIN = SeedChain(bytes(range(32)), 10)


def sig(round_no: int) -> bytes:
    """A stand-in beacon signature (the engine records it; BLS checks happen before the log)."""
    return round_no.to_bytes(8, "big") * 6


def new_engine(players: tuple[str, ...] = ("alice", "bob")) -> Engine:
    engine = Engine(products=[ChartgameProduct.factory(CONFIG)])
    for p in players:
        ok(engine, Deposit(command_id=f"f{p}", owner=p, asset="USDC", amount=10**9))
    ok(
        engine,
        ChartCommitChain(command_id="chain", game="g", chain_id=1, commitment=CHAIN.commitment, length=10),
    )
    return engine


_n = [0]


def run(engine: Engine, cmd: Command) -> tuple[Accepted | Rejected, list[Any]]:
    _n[0] += 1
    if not cmd.command_id:
        cmd.command_id = f"c{_n[0]}"
    return stamp_apply(engine, cmd)


def ok(engine: Engine, cmd: Command) -> Any:
    result, _ = run(engine, cmd)
    assert isinstance(result, Accepted), result
    return result.data


def rejected(engine: Engine, cmd: Command, code: str) -> None:
    before = ledger_bytes(engine), engine.products["chartgame"].snapshot_state()
    result, events = run(engine, cmd)
    assert isinstance(result, Rejected) and result.code == code, result
    assert events == [] and (ledger_bytes(engine), engine.products["chartgame"].snapshot_state()) == before


def start_round(engine: Engine, round_no: int = 1, start_ms: int = START_MS) -> None:
    view = ok(engine, ChartAnnounceRound(command_id="", game="g", round_no=round_no, start_ms=start_ms))
    assert view.beacon_round == drand.round_at_or_after(start_ms)
    ok(
        engine,
        ChartBeginRound(
            command_id="",
            game="g",
            round_no=round_no,
            seed=CHAIN.seed(round_no),
            beacon_signature=sig(view.beacon_round),
        ),
    )


def ticks(engine: Engine, n: int, round_no: int = 1) -> list[Any]:
    candles = []
    for _ in range(n):
        _, events = run(engine, ChartTick(command_id="", game="g", round_no=round_no))
        candles += [e.candle for e in events if isinstance(e, CandleMade)]
    return candles


def test_a_round_is_announced_with_its_beacon_round_and_opens_on_the_next_seed() -> None:
    engine = new_engine()
    ok(engine, ChartAnnounceRound(command_id="", game="g", round_no=1, start_ms=START_MS))
    rejected(
        engine,
        ChartBeginRound(command_id="", game="g", round_no=1, seed=CHAIN.seed(2), beacon_signature=sig(1000)),
        codes.BAD_SEED,
    )
    rejected(
        engine,
        ChartAnnounceRound(command_id="", game="g", round_no=2, start_ms=START_MS),
        codes.ROUND_IN_PROGRESS,
    )
    ok(
        engine,
        ChartBeginRound(command_id="", game="g", round_no=1, seed=CHAIN.seed(1), beacon_signature=sig(1000)),
    )
    rejected(engine, ChartTick(command_id="", game="g", round_no=2), codes.ROUND_NOT_OPEN)
    rejected(engine, ChartTick(command_id="", game="nope", round_no=1), codes.UNKNOWN_GAME)


def test_candles_are_reproducible_from_the_recorded_inputs_alone() -> None:
    engine = new_engine()
    start_round(engine)
    got = ticks(engine, 20)
    # Recompute with nothing but the public inputs: seed, game, round, beacon signature, model.
    stream = Stream(round_seed(CHAIN.seed(1), "g", 1, drand.randomness(sig(1000))))
    expected = []
    prev = GAME.model.start_price_ticks
    for i in range(20):
        c = next_candle(stream, i, prev, GAME.model)
        expected.append(c)
        prev = c.close
    assert got == expected
    assert len({c.close for c in got}) > 5  # the chart moves
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in got)
    # Another beacon gives another chart.
    other = Stream(round_seed(CHAIN.seed(1), "g", 1, drand.randomness(sig(1001))))
    assert next_candle(other, 0, GAME.model.start_price_ticks, GAME.model) != got[0]


def test_rolling_entropy_changes_the_chart_from_the_mix_on() -> None:
    engine = new_engine()
    start_round(engine)
    first = ticks(engine, 5)
    rejected(
        engine,
        ChartMixBeacon(command_id="", game="g", round_no=1, beacon_round=1002, beacon_signature=sig(1002)),
        codes.BAD_COMMAND,
    )
    ok(
        engine,
        ChartMixBeacon(command_id="", game="g", round_no=1, beacon_round=1001, beacon_signature=sig(1001)),
    )
    after = ticks(engine, 5)
    key0 = round_seed(CHAIN.seed(1), "g", 1, drand.randomness(sig(1000)))
    stream = Stream(mixed_key(key0, 1001, drand.randomness(sig(1001))))
    prev = first[-1].close
    for i, c in enumerate(after):
        assert c == next_candle(stream, 5 + i, prev, GAME.model)
        prev = c.close


def test_an_on_chain_seed_is_mixed_into_the_round_seed_and_kept() -> None:
    draw = OnchainDraw(chain="aptos", network=4, module="0x1::round_seed", seed=b"\x07" * 32, txn_hash="0xab")
    engine = new_engine()
    ok(engine, ChartAnnounceRound(command_id="", game="g", round_no=1, start_ms=START_MS))
    begin = ChartBeginRound(
        command_id="", game="g", round_no=1, seed=CHAIN.seed(1), beacon_signature=sig(1000), onchain=draw
    )
    short = msgspec.structs.replace(draw, seed=b"\x07" * 31)
    rejected(engine, msgspec.structs.replace(begin, onchain=short), codes.BAD_COMMAND)
    _, events = run(engine, begin)
    opened = next(e for e in events if isinstance(e, RoundChanged))
    assert opened.onchain == draw
    got = ticks(engine, 20)
    stream = Stream(round_seed(CHAIN.seed(1), "g", 1, drand.randomness(sig(1000)), draw.seed))
    prev = GAME.model.start_price_ticks
    for i, c in enumerate(got):
        assert c == next_candle(stream, i, prev, GAME.model)
        prev = c.close
    without = Stream(round_seed(CHAIN.seed(1), "g", 1, drand.randomness(sig(1000))))
    assert next_candle(without, 0, GAME.model.start_price_ticks, GAME.model) != got[0]
    # The draw is kept through a snapshot and published again at settlement.
    twin = Engine(products=[ChartgameProduct.factory(CONFIG)])
    twin.restore(engine.snapshot())
    assert twin.products["chartgame"].state["g"].round.onchain == draw


def test_positions_pay_by_the_formula_and_money_balances() -> None:
    engine = new_engine()
    start_round(engine)
    ticks(engine, 3)
    p = ok(
        engine,
        ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=1_000_000, leverage=5),
    )
    assert isinstance(p, ChartPositionView) and p.fee == 50_000  # 1 % of the 5x notional
    acc = engine.ledger.account("alice", "USDC")
    assert acc is not None and acc.balance == 10**9 - 1_000_000 - 50_000
    assert engine.ledger.account(ESCROW, "USDC").balance == 1_000_000  # type: ignore[union-attr]
    candles = ticks(engine, 4)
    closed = ok(engine, ChartClosePosition(command_id="", owner="alice", position_id=p.position_id))
    exit_price = candles[-1].close
    assert closed.exit_price == exit_price and closed.status == "closed"
    assert closed.payout == payout_of("long", 1_000_000, 5, p.entry_price, exit_price)
    assert acc.balance == 10**9 - 1_000_000 - 50_000 + closed.payout
    assert engine.ledger.account(ESCROW, "USDC").balance == 0  # type: ignore[union-attr]
    rejected(
        engine,
        ChartClosePosition(command_id="", owner="alice", position_id=p.position_id),
        codes.POSITION_NOT_FOUND,
    )
    assert reconcile(engine).ok
    engine.ledger.check_invariants()


def test_bust_and_settlement_at_the_last_candle() -> None:
    engine = new_engine()
    start_round(engine)
    ticks(engine, 1)
    high = ok(
        engine,
        ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=1_000_000, leverage=100),
    )
    calm = ok(
        engine,
        ChartOpenPosition(command_id="", owner="bob", game="g", side="short", stake=1_000_000, leverage=1),
    )
    events: list[Any] = []
    for _ in range(19):
        _, evs = run(engine, ChartTick(command_id="", game="g", round_no=1))
        events += evs
    changed = {e.position.position_id: e.position for e in events if hasattr(e, "position")}
    candles = [e.candle for e in events if isinstance(e, CandleMade)]
    assert len(candles) == 19
    lowest = min(c.low for c in candles)
    bust = bust_price("long", high.entry_price, 100)
    if lowest <= bust:
        assert changed[high.position_id].status == "busted" and changed[high.position_id].payout == 0
    else:
        assert changed[high.position_id].status == "settled"
    settled = changed[calm.position_id]
    assert settled.status == "settled" and settled.exit_price == candles[-1].close
    assert settled.payout == payout_of("short", 1_000_000, 1, calm.entry_price, candles[-1].close)
    assert any(
        isinstance(e, RoundChanged) and e.round.status == "settled" and e.seed == CHAIN.seed(1)
        for e in events
    )
    assert engine.ledger.account(ESCROW, "USDC").balance == 0  # type: ignore[union-attr]
    assert reconcile(engine).ok
    rejected(
        engine,
        ChartOpenPosition(command_id="", owner="bob", game="g", side="long", stake=1, leverage=1),
        codes.ROUND_NOT_OPEN,
    )
    # The next round needs the next seed of the chain.
    start_round(engine, 2, START_MS + 60_000)


def test_bad_positions_are_refused_with_nothing_moved() -> None:
    engine = new_engine(("alice", "bob", "poor"))
    rejected(
        engine,
        ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=10, leverage=1),
        codes.ROUND_NOT_OPEN,
    )
    start_round(engine)
    for cmd, code in [
        (
            ChartOpenPosition(command_id="", owner="alice", game="x", side="long", stake=10, leverage=1),
            codes.UNKNOWN_GAME,
        ),
        (
            ChartOpenPosition(command_id="", owner="alice", game="g", side="up", stake=10, leverage=1),
            codes.BAD_SIDE,
        ),
        (
            ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=10, leverage=0),
            codes.BAD_LEVERAGE,
        ),
        (
            ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=10, leverage=101),
            codes.BAD_LEVERAGE,
        ),
        (
            ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=0, leverage=1),
            codes.BAD_STAKE,
        ),
        (
            ChartOpenPosition(
                command_id="", owner="alice", game="g", side="long", stake=10**9 + 1, leverage=1
            ),
            codes.BAD_STAKE,
        ),
        (
            ChartOpenPosition(command_id="", owner="nobody", game="g", side="long", stake=10, leverage=1),
            codes.INSUFFICIENT_FUNDS,
        ),
        (
            ChartOpenPosition(command_id="", owner="@house", game="g", side="long", stake=10, leverage=1),
            codes.BAD_OWNER,
        ),
    ]:
        rejected(engine, cmd, code)
    p = ok(
        engine, ChartOpenPosition(command_id="", owner="alice", game="g", side="long", stake=10, leverage=1)
    )
    rejected(
        engine,
        ChartClosePosition(command_id="", owner="bob", position_id=p.position_id),
        codes.POSITION_NOT_FOUND,
    )


def test_formulas() -> None:
    assert bust_price("long", 1000, 10) == 900 and bust_price("short", 1000, 10) == 1100
    assert bust_price("long", 1000, 1) == 0  # 1x long only busts at zero
    assert payout_of("long", 100, 10, 1000, 1010) == 110
    assert payout_of("short", 100, 10, 1000, 1010) == 90
    assert payout_of("long", 100, 10, 1000, 899) == 0  # floored at zero
    assert payout_of("long", 100, 3, 1000, 999) == 99  # -0.3 floors toward the house


def test_a_tick_that_fails_midway_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = new_engine()
    start_round(engine)
    ticks(engine, 2)
    for owner in ("alice", "bob"):
        ok(
            engine,
            ChartOpenPosition(command_id="", owner=owner, game="g", side="long", stake=1_000, leverage=100),
        )
    before = ledger_bytes(engine), engine.products["chartgame"].snapshot_state()
    real = Ledger.move

    def fail(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(Ledger, "move", fail)
    # Tick until a bust or the end needs a ledger move: that tick fails and must change nothing.
    for _ in range(18):
        result, events = run(engine, ChartTick(command_id="", game="g", round_no=1))
        if isinstance(result, Rejected):
            assert result.code == codes.INTERNAL_ERROR and events == []
            assert (ledger_bytes(engine), engine.products["chartgame"].snapshot_state()) == before
            break
        before = ledger_bytes(engine), engine.products["chartgame"].snapshot_state()
    else:
        raise AssertionError("no tick needed the ledger")
    monkeypatch.setattr(Ledger, "move", real)
    ticks(engine, 1)  # and the game goes on


def test_snapshot_mid_round_continues_identically() -> None:
    engine = new_engine()
    start_round(engine)
    ticks(engine, 7)
    ok(
        engine,
        ChartOpenPosition(command_id="", owner="alice", game="g", side="short", stake=5_000, leverage=20),
    )
    twin = Engine(products=[ChartgameProduct.factory(CONFIG)])
    twin.restore(engine.snapshot())
    assert twin.state_hash() == engine.state_hash()
    a = ticks(engine, 13)
    _n[0] -= 13  # the same command ids for the twin
    b = ticks(twin, 13)
    assert a == b and twin.state_hash() == engine.state_hash()
    assert reconcile(twin).ok and engine.ledger.account(HOUSE, "USDC") is not None


def test_model_params_are_recorded_defaults() -> None:
    assert ModelParams().sub_ticks == 8 and GameConfig(game="x", name="x").candles_per_round == 461


def test_rtp_by_simulation_is_the_fee_alone_without_busts_and_carries_its_error() -> None:
    game = GameConfig(game="r", name="rtp", fee_bps=5, max_leverage=25)
    estimate = simulate_rtp(game, rounds=20, positions_per_round=10)
    assert estimate == simulate_rtp(game, rounds=20, positions_per_round=10)  # deterministic
    assert estimate.positions == 20 * 10 * 2  # every path long and short
    assert set(estimate.rtp_ppm) == {1, 2, 5, 10, 25}
    # No bust is reachable at 1x in a round: long and short payouts cancel to the stakes, and
    # the RTP is 1 / (1 + fee): 999,500.25 ppm, floored.
    assert estimate.rtp_ppm[1] == 999_500 and estimate.standard_error_ppm[1] == 0
    assert estimate.percent()["1"] == "99.9500" and estimate.error_percent()["1"] == "0.0000"
    # Higher leverage pays more fee, and busts make the estimate noisy.
    assert estimate.rtp_ppm[25] < estimate.rtp_ppm[1] and estimate.standard_error_ppm[25] > 0

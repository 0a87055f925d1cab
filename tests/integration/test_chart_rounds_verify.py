"""Reproducibility at scale: 100 rounds played on the engine (local beacons, rolling entropy),
each one checked by the standalone verifier's own code."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from cashmarkets.beacons.sources import LocalSource
from cashmarkets.core.commands import Command
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.chartgame import (
    ChainCommitted,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameConfig,
    ChartgameProduct,
    ChartMixBeacon,
    ChartTick,
    GameConfig,
)
from cashmarkets.core.results import Accepted
from cashmarkets.fairness.chain import SeedChain
from tests.integration.chart_helpers import TOOL, round_document, settled_of

GAME = GameConfig(
    game="v", name="verify", candles_per_round=60, beacon_genesis_s=1_700_000_000, beacon_period_s=1
)
ROUNDS = 100


def load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("verify_round", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_hundred_rounds_verify_with_the_standalone_tool() -> None:
    tool = load_tool()
    engine = Engine(products=[ChartgameProduct.factory(ChartgameConfig(games=(GAME,)))])
    source = LocalSource(b"local beacon key" * 2)
    events: list[Any] = []
    n = 0

    def ok(cmd: Command) -> Any:
        nonlocal n
        n += 1
        cmd.command_id, cmd.seq, cmd.ts_ns = f"c{n}", engine.seq + 1, engine.ts_ns + 1
        result, evs = engine.apply(cmd)
        assert isinstance(result, Accepted), result
        events.extend(evs)
        return result.data

    def sign(round_no: int) -> bytes:
        return asyncio.run(source.fetch(round_no)).signature

    chain = SeedChain(b"\x07" * 32, ROUNDS)
    ok(ChartCommitChain(command_id="", game="v", chain_id=1, commitment=chain.commitment, length=ROUNDS))
    for r in range(1, ROUNDS + 1):
        view = ok(
            ChartAnnounceRound(command_id="", game="v", round_no=r, start_ms=1_800_000_000_000 + r * 90_000)
        )
        ok(
            ChartBeginRound(
                command_id="",
                game="v",
                round_no=r,
                seed=chain.seed(r),
                beacon_signature=sign(view.beacon_round),
            )
        )
        for i in range(GAME.candles_per_round):
            if i and i % 25 == 0:  # rolling entropy twice a round
                b = view.beacon_round + i // 25
                ok(
                    ChartMixBeacon(
                        command_id="", game="v", round_no=r, beacon_round=b, beacon_signature=sign(b)
                    )
                )
            ok(ChartTick(command_id="", game="v", round_no=r))
    committed = next(e for e in events if isinstance(e, ChainCommitted))
    settled = settled_of(events)
    assert len(settled) == ROUNDS
    for s in settled:
        assert len(s.beacons) == 3
        doc = round_document(GAME, s, events, committed, source.public_key)
        checks, ok_all = tool.verify(doc)
        assert ok_all and all(result is True for _, result in checks), (s.round.round_no, checks)

"""`cashmarkets bench chartgame`: candle generation time, rounds per second engine-only (back to
back, through `Engine.apply`, with positions), and the default game's RTP by simulation."""

from __future__ import annotations

import gc
import hashlib
import time
from typing import Any

from cashmarkets.core.commands import Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.chartgame import (
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameConfig,
    ChartgameProduct,
    ChartOpenPosition,
    ChartTick,
    next_candle,
    simulate_rtp,
)
from cashmarkets.fairness.chain import SeedChain
from cashmarkets.fairness.derive import Stream


def run(candles: int = 20_000, rounds: int = 50, rtp_rounds: int = 300, players: int = 20) -> dict[str, Any]:
    game = ChartgameConfig().games[0]
    gc.collect()
    gc.disable()
    try:
        # Candle generation alone.
        stream = Stream(hashlib.sha256(b"bench").digest())
        times = []
        prev = game.model.start_price_ticks
        clock = time.perf_counter_ns
        for i in range(candles):
            t = clock()
            c = next_candle(stream, i, prev, game.model)
            times.append(clock() - t)
            prev = c.close
        times.sort()
        # Rounds back to back on the engine, with `players` positions each.
        engine = Engine(products=[ChartgameProduct.factory()])
        seq = 0

        def apply(cmd: Any) -> Any:
            nonlocal seq
            seq += 1
            cmd.command_id, cmd.seq, cmd.ts_ns = f"b{seq}", seq, seq
            return engine.apply(cmd)[0]

        for p in range(players):
            apply(Deposit(command_id="", owner=f"p{p}", asset="USDC", amount=10**15))
        chain = SeedChain(hashlib.sha256(b"chain").digest(), rounds)
        apply(
            ChartCommitChain(
                command_id="", game=game.game, chain_id=1, commitment=chain.commitment, length=rounds
            )
        )
        started = time.perf_counter()
        positions = 0
        for r in range(1, rounds + 1):
            apply(
                ChartAnnounceRound(
                    command_id="", game=game.game, round_no=r, start_ms=1_800_000_000_000 + r * 60_000
                )
            )
            apply(
                ChartBeginRound(
                    command_id="",
                    game=game.game,
                    round_no=r,
                    seed=chain.seed(r),
                    beacon_signature=b"\x01" * 48,
                )
            )
            for i in range(game.candles_per_round):
                if i < players:
                    side = "long" if i % 2 else "short"
                    opened = apply(
                        ChartOpenPosition(
                            command_id="",
                            owner=f"p{i}",
                            game=game.game,
                            side=side,
                            stake=1_000_000,
                            leverage=1 + (i * 4) % game.max_leverage,
                        )
                    )
                    positions += type(opened).__name__ == "Accepted"
                apply(ChartTick(command_id="", game=game.game, round_no=r))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    rtp = simulate_rtp(game, rtp_rounds)
    n = len(times)
    return {
        "bench": "chartgame",
        "game": game.game,
        "candle_p50_us": round(times[n // 2] / 1000, 2),
        "candle_p99_us": round(times[min(n - 1, int(n * 0.99))] / 1000, 2),
        "candles_per_round": game.candles_per_round,
        "rounds": rounds,
        "positions_per_round": players,
        "positions_opened": positions,
        "rounds_per_s": round(rounds / elapsed, 1),
        "commands_per_s": round(rounds * (game.candles_per_round + 2 + players) / elapsed),
        "rtp": {
            "rounds": rtp.rounds,
            "positions_per_leverage": rtp.positions,
            "fee_bps_of_notional": game.fee_bps,
            "percent_by_leverage": rtp.percent(),
            "standard_error_by_leverage": rtp.error_percent(),
        },
    }

"""`cashmarkets bench chartgame`: candle generation time, rounds per second engine-only (back to
back, through `Engine.apply`, with positions), and the default game's RTP by simulation
(`simulate_rtp`, also what GET /chartgame/games publishes)."""

from __future__ import annotations

import gc
import hashlib
import math
import time
from typing import Any, Final

import msgspec

from cashmarkets.core.commands import Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.money import format_amount
from cashmarkets.core.products.chartgame import (
    BPS,
    PPM,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameConfig,
    ChartgameProduct,
    ChartOpenPosition,
    ChartTick,
    GameConfig,
    bust_price,
    next_candle,
    payout_of,
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


RTP_LEVERAGES: Final = (1, 2, 5, 10, 25, 50, 100)


class RtpEstimate(msgspec.Struct, kw_only=True):
    rounds: int
    positions: int  # per leverage
    # leverage -> return to player in millionths (payouts / (stakes + fees)); fees included.
    rtp_ppm: dict[int, int]
    # leverage -> the estimate's standard error in millionths (rounds are independent batches).
    standard_error_ppm: dict[int, int] = msgspec.field(default_factory=dict)

    def percent(self) -> dict[str, str]:
        """RTP per leverage as published: percent with 4 decimals."""
        return {str(x): format_amount(v, 4) for x, v in self.rtp_ppm.items()}  # ppm = 1e-4 %

    def error_percent(self) -> dict[str, str]:
        """The standard error per leverage, in percentage points."""
        return {str(x): format_amount(v, 4) for x, v in self.standard_error_ppm.items()}


def simulate_rtp(
    game: GameConfig, rounds: int, positions_per_round: int = 20, seed: bytes = b"rtp"
) -> RtpEstimate:
    """Return to player by simulation, per leverage: rounds from independent seeds (the walk has
    the same law whatever the seed), players opening at a random candle and holding to a random
    later candle, busts as in the engine; each path is played long and short (a player's side is
    a fair coin, so counting both is its exact average: same mean, far less noise at high
    leverage, where one side's gain nearly cancels the other's loss) and at every leverage of
    `RTP_LEVERAGES` (up to the game's maximum). Deterministic for a seed."""
    model = game.model
    n = game.candles_per_round
    leverages = [x for x in RTP_LEVERAGES if x <= game.max_leverage]
    staked = dict.fromkeys(leverages, 0)
    paid = dict.fromkeys(leverages, 0)
    paid_squares = dict.fromkeys(leverages, 0)  # Σ (a round's payouts)², for the standard error
    stake = game.stake_min * 100
    for r in range(rounds):
        round_paid = dict.fromkeys(leverages, 0)
        stream = Stream(hashlib.sha256(seed + r.to_bytes(8, "big")).digest())
        candles = []
        prev = model.start_price_ticks
        for i in range(n):
            c = next_candle(stream, i, prev, model)
            candles.append(c)
            prev = c.close
        players = Stream(hashlib.sha256(b"players" + seed + r.to_bytes(8, "big")).digest())
        for _ in range(positions_per_round):
            opened = players.below(n - 1)
            close_at = players.between(opened + 1, n - 1)
            entry, exit_price = candles[opened].close, candles[close_at].close
            path = candles[opened + 1 : close_at + 1]
            lowest, highest = min(c.low for c in path), max(c.high for c in path)
            for leverage in leverages:
                for side in ("long", "short"):
                    bust = bust_price(side, entry, leverage)
                    busted = lowest <= bust if side == "long" else highest >= bust
                    payout = 0 if busted else payout_of(side, stake, leverage, entry, exit_price)
                    staked[leverage] += stake + stake * leverage * game.fee_bps // BPS
                    round_paid[leverage] += payout
        for leverage, value in round_paid.items():
            paid[leverage] += value
            paid_squares[leverage] += value * value
    errors = {}
    for x in leverages:
        # Every round stakes the same: SE = sqrt(sample variance of a round's payouts / n) / stake
        # of a round, with the variance (nQ - S²) / (n (n - 1)).
        if rounds < 2:
            errors[x] = 0
            continue
        spread = paid_squares[x] * rounds - paid[x] ** 2
        errors[x] = math.isqrt(spread * PPM * PPM // (rounds * rounds * (rounds - 1))) // (
            staked[x] // rounds
        )
    return RtpEstimate(
        rounds=rounds,
        positions=rounds * positions_per_round * 2,
        rtp_ppm={x: paid[x] * PPM // staked[x] for x in leverages},
        standard_error_ppm=errors,
    )

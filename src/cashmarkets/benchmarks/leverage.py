"""Engine-only price-tick processing with many open positions (product leverage).

Opens `positions` positions (long and short, leverage 2..50, take-profits and stop-losses spread
around the price) and then applies `ticks` PriceTicks of a small random walk. Reports ticks/s,
per-tick latency, and how many positions the ticks closed (a tick only touches the positions
whose trigger it crosses: the rest cost nothing).
"""

from __future__ import annotations

import random
import time

from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.leverage import LeverageConfig, LeverageProduct, OpenPosition, PriceTick
from cashmarkets.core.results import Accepted
from cashmarkets.ops import gcpolicy

USDC = 1_000_000
START = 6_500_000  # BTC 65000.00


def run(positions: int = 100_000, ticks: int = 50_000, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    gcpolicy.tune()
    config = LeverageConfig(positions_max=positions + 10, positions_per_owner_max=1_000)
    engine = Engine(products=[LeverageProduct.factory(config)])
    ts = 0

    def apply(cmd: Command) -> object:
        nonlocal ts
        ts += 1_000
        cmd.seq, cmd.ts_ns = engine.seq + 1, ts
        return engine.apply(cmd)[0]

    owners = max(1, positions // 500)
    for i in range(owners):
        apply(Deposit(command_id=f"f{i}", owner=f"u{i}", asset="USDC", amount=10**9 * USDC))
    apply(PriceTick(command_id="t0", symbol="BTC", bid=START, ask=START + 100, update_id=1))
    opened = 0
    for i in range(positions):
        side = "long" if i % 2 else "short"
        spread = rng.randrange(50_000, 600_000)
        tp = START + spread if side == "long" else START - spread
        sl = START - spread if side == "long" else START + spread
        result = apply(
            OpenPosition(
                command_id=f"o{i}",
                owner=f"u{i % owners}",
                symbol="BTC",
                side=side,
                margin=10 * USDC,
                leverage=rng.randrange(2, 51),
                take_profit=tp,
                stop_loss=sl,
            )
        )
        opened += isinstance(result, Accepted)
    gcpolicy.freeze_survivors()
    product = engine.products["leverage"]
    price = START
    samples = [0] * ticks
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for n in range(ticks):
        price = max(1_000_000, price + rng.randrange(-2_000, 2_001))
        cmd = PriceTick(command_id=f"t{n + 1}", symbol="BTC", bid=price, ask=price + 100, update_id=n + 2)
        ts += 1_000
        cmd.seq, cmd.ts_ns = engine.seq + 1, ts
        t0 = clock()
        engine.apply(cmd)
        samples[n] = clock() - t0
    elapsed = time.perf_counter() - start
    samples.sort()
    engine.ledger.check_invariants()
    return {
        "bench": "leverage_engine",
        "positions_opened": opened,
        "ticks": ticks,
        "ticks_per_s": round(ticks / elapsed),
        "p50_us": round(samples[ticks // 2] / 1000, 2),
        "p99_us": round(samples[int(ticks * 0.99)] / 1000, 2),
        "max_us": round(samples[-1] / 1000, 2),
        "positions_closed_by_ticks": opened - len(product.positions),
        "commands_per_s": round(ticks / elapsed),
    }

"""The chart game's scheduler on a real runtime (SQLite journal): rounds run back to back with
committed seeds and local beacons; every round's candles are recomputed from its recorded inputs
alone; a scheduler stopped mid-round and started again continues the same round."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from cashmarkets.beacons.sources import LocalSource
from cashmarkets.core.products.chartgame import (
    CandleMade,
    ChainCommitted,
    GameConfig,
    RoundChanged,
)
from cashmarkets.fairness.chain import verify_link
from cashmarkets.runtime.chart_scheduler import ChainStore, ChartScheduler
from cashmarkets.runtime.chart_verify import verify_document
from cashmarkets.store.chart_queries import verification_document
from tests.integration.chart_helpers import (
    GAME,
    play_until_settled,
    round_document,
    run_tool,
    runtime,
    settled_of,
)


def check_round(
    settled: RoundChanged, candles: list[Any], public_key: bytes, commitment: bytes, length: int
) -> None:
    """Recompute a settled round from what it published (the server's own verifier)."""
    doc = verification_document(
        GAME, settled.round, settled.seed, settled.beacons, candles, commitment, length, public_key
    )
    checks = verify_document(doc)
    assert all(ok for _, ok in checks), checks


async def test_rounds_run_back_to_back_and_verify(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    await rt.start()
    events: list[Any] = []
    rt.subscribe(events.extend)
    source = LocalSource(b"beacon-secret" * 3)
    scheduler = ChartScheduler(rt, GAME, source, ChainStore(tmp_path / "chains"), commit_ms=100, gap_ms=50)
    await play_until_settled(rt, scheduler, events, 2)
    settled = settled_of(events)
    assert len(settled) >= 2
    chain = ChainStore(tmp_path / "chains").load("fast", 1)
    assert chain is not None
    committed = next(e for e in events if isinstance(e, ChainCommitted))
    assert committed.commitment == chain.commitment
    link = chain.commitment
    for s in settled[:2]:
        candles = [e.candle for e in events if isinstance(e, CandleMade) and e.round_no == s.round.round_no]
        assert [c.index for c in candles] == list(range(GAME.candles_per_round))
        check_round(s, candles, source.public_key, committed.commitment, committed.length)
        assert verify_link(s.seed, link)
        link = s.seed
        assert_standalone_verifier(tmp_path, round_document(GAME, s, events, committed, source.public_key))


def flip_last_byte(hex_text: str) -> str:
    """A hex string with its last byte changed, whatever it was (setting it to a constant would
    leave it unchanged once in 256 runs)."""
    return hex_text[:-2] + format(int(hex_text[-2:], 16) ^ 0xFF, "02x")


def assert_standalone_verifier(tmp_path: Path, doc: dict[str, Any]) -> None:
    """tools/verify_round.py accepts the round and refuses every tampered copy."""
    path = tmp_path / f"round-{doc['round']}.json"
    path.write_text(json.dumps(doc))
    assert run_tool(path) == 0
    tampered = [
        ("seed", lambda d: d.__setitem__("seed", "00" * 32)),
        (
            "beacon",
            lambda d: d["beacons"][0].__setitem__("signature", flip_last_byte(d["beacons"][0]["signature"])),
        ),
        ("parameter", lambda d: d["model"].__setitem__("volatilityBp", d["model"]["volatilityBp"] + 1)),
        ("candle", lambda d: d["candles"][7].__setitem__(4, d["candles"][7][4] + 1)),
        ("schedule", lambda d: d.__setitem__("startMs", d["startMs"] - 5_000)),
    ]
    for name, change in tampered:
        bad = copy.deepcopy(doc)
        change(bad)
        path.write_text(json.dumps(bad))
        assert run_tool(path) == 1, name


async def test_a_restarted_scheduler_continues_the_open_round(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    await rt.start()
    events: list[Any] = []
    rt.subscribe(events.extend)
    source = LocalSource(b"beacon-secret" * 3)
    chains = ChainStore(tmp_path / "chains")
    slow = GameConfig(**{**{f: getattr(GAME, f) for f in GAME.__struct_fields__}, "candle_interval_ms": 20})
    first = ChartScheduler(rt, slow, source, chains, commit_ms=50, gap_ms=50)
    task = asyncio.create_task(first.run())
    for _ in range(400):
        await asyncio.sleep(0.01)
        if sum(1 for e in events if isinstance(e, CandleMade)) >= 5:
            break
    task.cancel()  # as if the process died mid-round
    try:
        await task
    except asyncio.CancelledError:
        pass
    made_before = sum(1 for e in events if isinstance(e, CandleMade))
    assert 5 <= made_before < GAME.candles_per_round
    second = ChartScheduler(rt, slow, source, chains, commit_ms=50, gap_ms=50)
    task = asyncio.create_task(second.run())
    try:
        for _ in range(400):
            await asyncio.sleep(0.02)
            if any(isinstance(e, RoundChanged) and e.round.status == "settled" for e in events):
                break
    finally:
        await second.stop()
        await asyncio.wait_for(task, 5)
        await rt.stop()
    settled = next(e for e in events if isinstance(e, RoundChanged) and e.round.status == "settled")
    assert settled.round.round_no == 1
    candles = [e.candle for e in events if isinstance(e, CandleMade) and e.round_no == 1]
    assert [c.index for c in candles] == list(range(GAME.candles_per_round))
    chain = chains.load("fast", 1)
    assert chain is not None
    check_round(settled, candles, source.public_key, chain.commitment, chain.length)

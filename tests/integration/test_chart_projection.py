"""Chart game events projected to SQL (SQLite and PostgreSQL): chains, rounds, every candle,
positions; a settled round's row holds what verification needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from cashmarkets.bootstrap import build_runtime, store_url
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.products.chartgame import (
    CandleMade,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameConfig,
    ChartOpenPosition,
    ChartTick,
    OnchainDraw,
    PositionChanged,
)
from cashmarkets.core.results import Accepted
from cashmarkets.fairness.chain import SeedChain
from cashmarkets.ops.settings import Settings
from cashmarkets.store import chart_queries, migrate
from cashmarkets.store.db import create_engine
from cashmarkets.store.tables import chart_candles, chart_chains, chart_positions, chart_rounds
from tests.integration.store_helpers import partitions_of, project_everything

GAME = "btc-30s"
CHAIN = SeedChain(bytes(range(32)), 5)
DRAW = OnchainDraw(
    chain="aptos", network=4, module="0xa::round_seed", seed=b"\x05" * 32, txn_hash="0x" + "cd" * 32
)


async def play(settings: Settings) -> dict[str, Any]:
    await migrate.upgrade(store_url(settings))
    runtime = build_runtime(settings)
    await runtime.start()
    events: list[Any] = []
    runtime.subscribe(events.extend)
    n = 0

    async def ok(cmd: Command) -> Any:
        nonlocal n
        n += 1
        cmd.command_id = f"c{n}"
        result = await runtime.submit(cmd)
        assert isinstance(result, Accepted), result
        return result.data

    for user in ("alice", "bob"):
        await ok(Deposit(command_id="", owner=user, asset="USDC", amount=10**9))
    await ok(
        ChartCommitChain(
            command_id="", game=GAME, chain_id=1, commitment=CHAIN.commitment, length=5, onchain_txn="0xfe"
        )
    )
    view = await ok(ChartAnnounceRound(command_id="", game=GAME, round_no=1, start_ms=1_800_000_000_000))
    await ok(
        ChartBeginRound(
            command_id="",
            game=GAME,
            round_no=1,
            seed=CHAIN.seed(1),
            beacon_signature=b"\x01" * 48,
            onchain=DRAW,
        )
    )
    games = runtime.engine.products["chartgame"].games
    for i in range(games[GAME].candles_per_round):
        if i == 3:
            await ok(
                ChartOpenPosition(
                    command_id="", owner="alice", game=GAME, side="long", stake=1_000_000, leverage=25
                )
            )
            await ok(
                ChartOpenPosition(
                    command_id="", owner="bob", game=GAME, side="short", stake=2_000_000, leverage=2
                )
            )
        await ok(ChartTick(command_id="", game=GAME, round_no=1))
    await runtime.stop()
    return {"beacon_round": view.beacon_round, "events": events}


async def project(settings: Settings) -> dict[str, Any]:
    db = create_engine(store_url(settings))
    try:
        await project_everything(settings, db)
        async with db.connect() as conn:
            return {
                "chains": (await conn.execute(select(chart_chains))).all(),
                "rounds": (await conn.execute(select(chart_rounds))).all(),
                "candles": (await conn.execute(select(chart_candles).order_by(chart_candles.c.idx))).all(),
                "positions": (
                    await conn.execute(select(chart_positions).order_by(chart_positions.c.position_id))
                ).all(),
            }
    finally:
        await db.dispose()


def check(played: dict[str, Any], rows: dict[str, Any]) -> None:
    events = played["events"]
    assert [(r.chain_id, r.commitment, r.length, r.onchain_txn) for r in rows["chains"]] == [
        (1, CHAIN.commitment.hex(), 5, "0xfe")
    ]
    [round_row] = rows["rounds"]
    assert (round_row.status, round_row.candles, round_row.seed) == ("settled", 461, CHAIN.seed(1).hex())
    assert round_row.beacon_round == played["beacon_round"] and round_row.chain_index == 4
    assert json.loads(round_row.beacons) == [[played["beacon_round"], 0, "01" * 48]]
    assert msgspec.json.decode(round_row.onchain, type=OnchainDraw) == DRAW
    made = [e.candle for e in events if isinstance(e, CandleMade)]
    assert [(c.idx, c.open, c.high, c.low, c.close, c.volume) for c in rows["candles"]] == [
        (c.index, c.open, c.high, c.low, c.close, c.volume) for c in made
    ]
    final = {e.position.position_id: e.position for e in events if isinstance(e, PositionChanged)}
    assert [(p.position_id, p.status, p.payout, p.exit_price) for p in rows["positions"]] == [
        (i, final[i].status, final[i].payout, final[i].exit_price) for i in sorted(final)
    ]
    assert {p.status for p in rows["positions"]} <= {"busted", "settled"}


def settings_for(tmp_path: Path, database_url: str | None = None) -> Settings:
    env = {"CASHMARKETS_DATA_DIR": str(tmp_path / "data"), "CASHMARKETS_PROJECTOR_BATCH_RECORDS": "37"}
    if database_url:
        env["CASHMARKETS_DATABASE_URL"] = database_url
    return Settings.from_env(env)


async def test_sqlite_projection_of_a_round(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    played = await play(settings)
    check(played, await project(settings))
    db = create_engine(store_url(settings))
    try:
        game = ChartgameConfig().games[0]
        doc = await chart_queries.verification(db, game, 1, b"\x02" * 96)
    finally:
        await db.dispose()
    assert doc is not None and doc["chain"]["onchainTxn"] == "0xfe"
    assert doc["onchain"] == {
        "chain": "aptos",
        "network": 4,
        "module": "0xa::round_seed",
        "seed": "05" * 32,
        "txnHash": DRAW.txn_hash,
    }


@pytest.mark.postgres
async def test_postgres_projection_of_a_round_with_candle_partitions(tmp_path: Path, pg_url: str) -> None:
    settings = settings_for(tmp_path, pg_url)
    played = await play(settings)
    check(played, await project(settings))
    parts, in_default = await partitions_of(pg_url, "chart_candles")
    assert len(parts) == 2 and in_default == 0  # the month's partition and the (empty) default

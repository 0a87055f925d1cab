"""Reads of the chart game projection shared by the API and the CLI."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.core.products.chartgame import (
    Candle,
    GameConfig,
    OnchainDraw,
    RoundView,
    verification_document,
)
from cashmarkets.store.tables import chart_candles, chart_chains, chart_rounds


async def verification(
    db: AsyncEngine, game: GameConfig, round_no: int, public_key: bytes
) -> dict[str, Any] | None:
    """The verification document of a settled round, or None (unknown or not settled)."""
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(chart_rounds).where(
                    chart_rounds.c.game == game.game, chart_rounds.c.round_no == round_no
                )
            )
        ).first()
        if row is None or row.status != "settled" or row.seed is None:
            return None
        chain = (
            await conn.execute(
                select(chart_chains).where(
                    chart_chains.c.game == game.game, chart_chains.c.chain_id == row.chain_id
                )
            )
        ).one()
        c = chart_candles.c
        rows = (
            await conn.execute(
                select(chart_candles).where(c.game == game.game, c.round_no == round_no).order_by(c.idx)
            )
        ).all()
    view = RoundView(
        game=game.game,
        round_no=round_no,
        status=row.status,
        start_ms=row.start_ms,
        beacon_round=row.beacon_round,
        chain_id=row.chain_id,
        chain_index=row.chain_index,
        candles=row.candles,
    )
    beacons = [(b, i, bytes.fromhex(s)) for b, i, s in json.loads(row.beacons or "[]")]
    candles = [Candle(x.idx, x.open, x.high, x.low, x.close, x.volume) for x in rows]
    return verification_document(
        game,
        view,
        bytes.fromhex(row.seed),
        beacons,
        candles,
        bytes.fromhex(chain.commitment),
        chain.length,
        public_key,
        None if row.onchain is None else msgspec.json.decode(row.onchain, type=OnchainDraw),
        chain.onchain_txn or "",
    )

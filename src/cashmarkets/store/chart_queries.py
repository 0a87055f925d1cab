"""Reads of the chart game projection shared by the API and the CLI, and the verification
document of a settled round built from them (checked by runtime/chart_verify.py and
tools/verify_round.py)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.core.products.chartgame import Candle, GameConfig, ModelParams, OnchainDraw, RoundView
from cashmarkets.fairness import drand
from cashmarkets.fairness.derive import DERIVATION_VERSION
from cashmarkets.store.tables import chart_candles, chart_chains, chart_rounds


def model_json(m: ModelParams) -> dict[str, int]:
    """The model parameters as published (camelCase)."""
    return {
        "startPriceTicks": m.start_price_ticks,
        "priceDecimals": m.price_decimals,
        "subTicks": m.sub_ticks,
        "volatilityBp": m.volatility_bp,
        "driftBp": m.drift_bp,
        "jumpPpm": m.jump_ppm,
        "jumpBp": m.jump_bp,
    }


def verification_document(
    game: GameConfig,
    settled: RoundView,
    seed: bytes,
    beacons: list[tuple[int, int, bytes]],
    candles: list[Candle],
    commitment: bytes,
    chain_length: int,
    beacon_public_key: bytes,
    onchain: OnchainDraw | None = None,
    chain_onchain_txn: str = "",
) -> dict[str, Any]:
    """Everything a player needs to re-check a settled round (`tools/verify_round.py` reads it)."""
    return {
        "version": DERIVATION_VERSION,
        "game": game.game,
        "round": settled.round_no,
        "startMs": settled.start_ms,
        "candlesPerRound": game.candles_per_round,
        "model": model_json(game.model),
        "seed": seed.hex(),
        "chain": {
            "id": settled.chain_id,
            "commitment": commitment.hex(),
            "length": chain_length,
            # Round r of a chain uses c_(N-r): hashing the seed r times gives the commitment.
            "roundInChain": chain_length - settled.chain_index,
            "onchainTxn": chain_onchain_txn or None,
        },
        "beacons": [{"round": b, "fromCandle": i, "signature": s.hex()} for b, i, s in beacons],
        "beaconScheme": {
            "genesisS": game.beacon_genesis_s,
            "periodS": game.beacon_period_s,
            "publicKey": beacon_public_key.hex(),
            "dst": drand.DST_G1.decode(),
        },
        # With a chain adapter: the seed the chain drew for this round, mixed into the round seed.
        "onchain": None
        if onchain is None
        else {
            "chain": onchain.chain,
            "network": onchain.network,
            "module": onchain.module,
            "seed": onchain.seed.hex(),
            "txnHash": onchain.txn_hash,
        },
        "candles": [[c.index, c.open, c.high, c.low, c.close, c.volume] for c in candles],
    }


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

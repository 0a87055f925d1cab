"""Chart game events -> rows (in the projector's batch transaction): chains, rounds (upserted),
candles (one row each; monthly partitions on PostgreSQL), positions (upserted)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from cashmarkets.core.products.chartgame import CandleMade, ChainCommitted, PositionChanged, RoundChanged
from cashmarkets.projection.spot import ensure_partitions
from cashmarkets.store.tables import (
    CHART_CANDLE_PARTITION_PREFIX,
    chart_candles,
    chart_chains,
    chart_positions,
    chart_rounds,
)


class ChartBatch:
    def __init__(self) -> None:
        self.chains: list[dict[str, Any]] = []
        self.rounds: dict[tuple[str, int], dict[str, Any]] = {}
        self.candles: list[dict[str, Any]] = []
        self.positions: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self.chains or self.rounds or self.candles or self.positions)

    def add(self, event: Any, ts_ns: int) -> None:
        kind = type(event)
        if kind is CandleMade:
            c = event.candle
            self.candles.append(
                {
                    "game": event.game,
                    "round_no": event.round_no,
                    "idx": c.index,
                    "ts_ms": ts_ns // 1_000_000,
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                }
            )
            row = self.rounds.get((event.game, event.round_no))
            if row is not None:
                row["candles"] = max(row["candles"], c.index + 1)
        elif kind is RoundChanged:
            r = event.round
            self.rounds[(r.game, r.round_no)] = {
                "game": r.game,
                "round_no": r.round_no,
                "status": r.status,
                "start_ms": r.start_ms,
                "beacon_round": r.beacon_round,
                "chain_id": r.chain_id,
                "chain_index": r.chain_index,
                "candles": r.candles,
                "seed": event.seed.hex() if event.seed else None,
                "beacons": json.dumps([[b, i, s.hex()] for b, i, s in event.beacons])
                if event.beacons
                else None,
                "onchain": None if event.onchain is None else msgspec.json.encode(event.onchain).decode(),
                "updated_seq": event.seq,
            }
        elif kind is PositionChanged:
            row = msgspec.structs.asdict(event.position)
            row["updated_seq"] = event.seq
            self.positions[row["position_id"]] = row
        elif kind is ChainCommitted:
            self.chains.append(
                {
                    "game": event.game,
                    "chain_id": event.chain_id,
                    "commitment": event.commitment.hex(),
                    "length": event.length,
                    "committed_seq": event.seq,
                    "onchain_txn": event.onchain_txn or None,
                }
            )

    async def write(self, conn: AsyncConnection, insert: Any, partitions: frozenset[str]) -> set[str]:
        created: set[str] = set()
        if self.chains:
            await conn.execute(insert(chart_chains).on_conflict_do_nothing(), self.chains)
        if self.rounds:
            stmt = insert(chart_rounds)
            keep = ("game", "round_no")
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[chart_rounds.c.game, chart_rounds.c.round_no],
                    set_={
                        c.name: getattr(stmt.excluded, c.name)
                        for c in chart_rounds.columns
                        if c.name not in keep
                    },
                ),
                list(self.rounds.values()),
            )
        if self.candles:
            if conn.dialect.name == "postgresql":
                opens = {row["ts_ms"] for row in self.candles}
                created = await ensure_partitions(
                    conn, "chart_candles", CHART_CANDLE_PARTITION_PREFIX, opens, partitions
                )
            await conn.execute(insert(chart_candles).on_conflict_do_nothing(), self.candles)
        if self.positions:
            stmt = insert(chart_positions)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[chart_positions.c.position_id],
                    set_={
                        c.name: getattr(stmt.excluded, c.name)
                        for c in chart_positions.columns
                        if c.name != "position_id"
                    },
                ),
                list(self.positions.values()),
            )
        return created

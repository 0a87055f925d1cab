"""Leverage events -> rows (in the projector's batch transaction): positions (inserted open,
closed in place) and one position_events row per opened/closed event."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cashmarkets.core.products.leverage import PositionClosed, PositionOpened
from cashmarkets.store.tables import position_events, positions

EVENTS: Final = frozenset({PositionOpened, PositionClosed})


class LeverageBatch:
    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed)

    def add(self, event: Any, ts_ns: int) -> None:
        if type(event) is PositionOpened:
            row = msgspec.structs.asdict(event.position)
            row["status"] = "open"
            self.opened.append(row)
            self.events.append(
                {
                    "position_id": row["position_id"],
                    "seq": event.seq,
                    "ts_ns": ts_ns,
                    "kind": "opened",
                    "reason": None,
                    "price": row["entry_price"],
                }
            )
        elif type(event) is PositionClosed:
            self.closed.append(
                {
                    "b_position_id": event.position_id,
                    "status": "closed",
                    "close_reason": event.reason,
                    "exit_price": event.exit_price,
                    "pnl": event.pnl,
                    "payout": event.payout,
                    "closed_seq": event.seq,
                    "closed_ts_ns": ts_ns,
                }
            )
            self.events.append(
                {
                    "position_id": event.position_id,
                    "seq": event.seq,
                    "ts_ns": ts_ns,
                    "kind": "closed",
                    "reason": event.reason,
                    "price": event.exit_price,
                }
            )

    async def write(self, conn: AsyncConnection, insert: Any, partitions: frozenset[str]) -> set[str]:
        if self.opened:
            await conn.execute(insert(positions).on_conflict_do_nothing(), self.opened)
        if self.closed:  # after the inserts: a position may open and close in one batch
            await conn.execute(
                update(positions).where(positions.c.position_id == bindparam("b_position_id")), self.closed
            )
        if self.events:
            await conn.execute(position_events.insert(), self.events)
        return set()

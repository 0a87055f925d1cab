"""CoinFlipped -> one coinflip_flips row each, in the projector's batch transaction."""

from __future__ import annotations

from typing import Any

from tests.support.coinflip.core import CoinFlipped
from tests.support.coinflip.tables import coinflip_flips

EVENTS = frozenset({CoinFlipped})


class CoinflipBatch:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.rows)

    def add(self, event: CoinFlipped, ts_ns: int) -> None:
        f = event.flip
        self.rows.append(
            {
                "flip_id": f.flip_id,
                "seq": event.seq,
                "ts_ns": ts_ns,
                "owner": f.owner,
                "asset": f.asset,
                "stake": f.stake,
                "call": f.call,
                "outcome": f.outcome,
                "payout": f.payout,
            }
        )

    async def write(self, conn: Any, insert: Any, partitions: frozenset[str]) -> set[str]:
        await conn.execute(insert(coinflip_flips).on_conflict_do_nothing(), self.rows)
        return set()

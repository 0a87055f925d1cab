"""What the chart scheduler needs from a chain: publish commitments, draw a round's seed.

`none` (the default) is no adapter at all: rounds mix only the seed chain and drand. An adapter
adds a third, independent source: a seed drawn by the chain's own randomness after the round's
commitment is on chain (docs/fairness.md, "Chain adapters").
"""

from __future__ import annotations

from typing import Protocol

from cashmarkets.core.products.chartgame import OnchainDraw


class ChainError(Exception):
    """The chain could not be reached or refused a transaction (the scheduler retries later)."""


class ChainConflict(ChainError):
    """The chain holds something else for this key (another commitment): a retry cannot help;
    the scheduler keeps logging it until an operator looks."""


class ChainAdapter(Protocol):
    name: str

    async def commit_chain(self, game: str, chain_id: int, commitment: bytes, length: int) -> str:
        """Publish a seed chain's terminal hash; returns the transaction hash. Idempotent: the
        same commitment again returns the first transaction."""
        ...

    async def draw_seed(self, game: str, round_no: int, commitment: bytes) -> OnchainDraw:
        """Publish a round's commitment and draw its seed on chain. Idempotent: a round drawn
        already returns its first draw (a seed is never drawn twice)."""
        ...

    async def seed_of(self, game: str, round_no: int) -> tuple[bytes, bytes, str]:
        """What the chain holds for a round: (seed, commitment, drawing txn); empty if not drawn."""
        ...

    async def close(self) -> None: ...

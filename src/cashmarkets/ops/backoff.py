"""Waiting between retries of a dependency that is down: exponential backoff with full jitter.

    delay_n = uniform(0, min(cap, initial * 2**n))

Full jitter spreads the reconnects of many processes (two APIs, a gateway per core, the engine,
the projector...) over the whole window instead of having them all knock at the same instant
when Redis or PostgreSQL comes back. `reset()` after a success starts over at `initial`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Final

INITIAL_S: Final = 0.1
CAP_S: Final = 2.0


class Backoff:
    def __init__(self, initial_s: float = INITIAL_S, cap_s: float = CAP_S) -> None:
        assert 0 < initial_s <= cap_s
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.attempts = 0

    def next_delay_s(self) -> float:
        """The next wait: at most `cap_s`, at least 0, growing with each attempt."""
        ceiling = min(self.cap_s, self.initial_s * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return random.uniform(0, ceiling)  # jitter, not a secret

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay_s())

    def reset(self) -> None:
        self.attempts = 0

"""Committed seed chains (bustabit style).

    c_0 = the secret start (32 random bytes, made outside the engine)
    c_i = sha256(c_(i-1))            for i = 1..N
    commitment = c_N                 published before any round uses the chain
    seed of round r (1-based) = c_(N-r)

so `sha256(seed_r)` is the seed of round r-1 (the commitment for r = 1): once the commitment is
public every future seed is fixed, and each revealed seed proves the previous ones. A chain of N
seeds serves N rounds; then a new chain is committed (rotation).
"""

from __future__ import annotations

import hashlib
from typing import Final

SEED_BYTES: Final = 32
# Seeds kept every this many links, so a round's seed costs at most this many hashes.
CHECKPOINT_EVERY: Final = 1_024


def link(seed: bytes) -> bytes:
    """The previous link of the chain: sha256(seed)."""
    return hashlib.sha256(seed).digest()


def verify_link(seed: bytes, previous: bytes) -> bool:
    """Does `seed` hash to `previous` (the last revealed seed, or the commitment)?"""
    return len(seed) == SEED_BYTES and link(seed) == previous


class SeedChain:
    """A chain of `length` seeds from a secret start; answers any round's seed quickly."""

    def __init__(self, start: bytes, length: int) -> None:
        if len(start) != SEED_BYTES:
            raise ValueError(f"a chain starts from {SEED_BYTES} bytes")
        if not 1 <= length <= 10_000_000:
            raise ValueError("a chain has 1..10,000,000 seeds")
        self.length = length
        self._checkpoints: list[bytes] = []  # c_0, c_K, c_2K, ...
        c = start
        for i in range(length + 1):
            if i % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(c)
            if i < length:
                c = link(c)
        self.commitment = c  # c_N

    def element(self, i: int) -> bytes:
        """c_i, for 0 <= i <= N."""
        if not 0 <= i <= self.length:
            raise IndexError(i)
        c = self._checkpoints[i // CHECKPOINT_EVERY]
        for _ in range(i % CHECKPOINT_EVERY):
            c = link(c)
        return c

    def seed(self, round_in_chain: int) -> bytes:
        """The seed of the chain's round r (1..N)."""
        if not 1 <= round_in_chain <= self.length:
            raise IndexError(f"round {round_in_chain} is outside 1..{self.length}")
        return self.element(self.length - round_in_chain)

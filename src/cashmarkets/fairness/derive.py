"""From committed inputs to numbers: the round seed and its unbiased stream.

    round_seed = HMAC-SHA256(key = chain seed,
                             msg = "cashmarkets/chartgame/v1" 0x00 game 0x00 round (8 bytes BE)
                                   beacon randomness (32 bytes) [chain-adapter seed])
    block_i    = HMAC-SHA256(key = round_seed, msg = i as 8 bytes BE)       i = 0, 1, 2, ...

The stream reads the blocks as a sequence of 64-bit big-endian words. `below(n)` draws words and
rejects those at or above the largest multiple of n under 2^64 (no modulo bias; no floats).
Every input is recorded with the round, so anyone can recompute every number.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

DERIVATION_VERSION: Final = "cashmarkets/chartgame/v1"
_WORD: Final = 1 << 64
_HMAC_BLOCK: Final = 64  # SHA-256's block size: HMAC pads its key to it
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_WORDS_PER_BLOCK: Final = 4  # a 32-byte HMAC-SHA256 block read as big-endian 64-bit words
_UNPACK_WORDS: Final = struct.Struct(">4Q").unpack


def round_seed(
    chain_seed: bytes, game: str, round_no: int, beacon_randomness: bytes, extra: bytes = b""
) -> bytes:
    """The seed of one round of one game (see the module docstring for the exact layout)."""
    if not 0 <= round_no < _WORD:
        raise ValueError("round number out of range")
    msg = b"".join(
        (
            DERIVATION_VERSION.encode(),
            b"\x00",
            game.encode(),
            b"\x00",
            round_no.to_bytes(8, "big"),
            beacon_randomness,
            extra,
        )
    )
    return hmac.new(chain_seed, msg, hashlib.sha256).digest()


class Stream:
    """64-bit words from HMAC-SHA256 in counter mode; deterministic for a seed.

    HMAC is computed from the key's precomputed inner and outer SHA-256 states (RFC 2104), which
    gives the same bytes as `hmac.new(seed, i, sha256)` at well under half the cost: candles draw
    a block every few words."""

    __slots__ = ("_block", "_index", "_inner", "_key", "_outer", "_words")

    def __init__(self, seed: bytes) -> None:
        self._key = seed
        padded = (hashlib.sha256(seed).digest() if len(seed) > _HMAC_BLOCK else seed).ljust(
            _HMAC_BLOCK, b"\0"
        )
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))
        self._block = 0
        self._words: tuple[int, ...] = ()
        self._index = _WORDS_PER_BLOCK  # nothing left of the (absent) current block

    @property
    def position(self) -> tuple[int, int]:
        """(blocks made, bytes used of the last): where the stream stands, for snapshots."""
        return (self._block, self._index * 8) if self._block else (0, 0)

    @classmethod
    def at(cls, seed: bytes, position: tuple[int, int]) -> Stream:
        """The stream of `seed` resumed at a `position` taken earlier."""
        stream = cls(seed)
        block, offset = position
        if block:
            stream._block = block - 1
            stream._fill()
            stream._index = offset // 8
        return stream

    @property
    def seed(self) -> bytes:
        return self._key

    def _fill(self) -> None:
        inner = self._inner.copy()
        inner.update(self._block.to_bytes(8, "big"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        self._words = _UNPACK_WORDS(outer.digest())
        self._block += 1
        self._index = 0

    def word(self) -> int:
        """The next uniform integer in [0, 2^64)."""
        if self._index == _WORDS_PER_BLOCK:
            self._fill()
        value = self._words[self._index]
        self._index += 1
        return value

    def below(self, n: int) -> int:
        """A uniform integer in [0, n) by rejection sampling (1 <= n <= 2^64)."""
        if not 1 <= n <= _WORD:
            raise ValueError("n is 1..2^64")
        limit = _WORD - _WORD % n  # the largest multiple of n not above 2^64
        while True:
            w = self.word()
            if w < limit:
                return w % n

    def between(self, low: int, high: int) -> int:
        """A uniform integer in [low, high]."""
        if high < low:
            raise ValueError("empty range")
        return low + self.below(high - low + 1)

"""drand's quicknet beacon: schedule and formulas (the BLS check is in `cashmarkets.beacons`).

quicknet publishes round r at genesis + (r - 1) * period; its signature is a BLS12-381 G1 point
over `sha256(r as 8-byte big-endian)` (hash-to-curve DST below), checked against the network's G2
public key, and its randomness is `sha256(signature)`. A game round started at time t uses the
first beacon round published at or after t: fixed by the schedule before the round opens, so the
operator cannot choose it, and unknown to everyone until drand publishes it.
"""

from __future__ import annotations

import hashlib
from typing import Final

QUICKNET_CHAIN_HASH: Final = "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"
QUICKNET_PUBLIC_KEY: Final = (
    "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d"
    "1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a"
)
QUICKNET_GENESIS_S: Final = 1_692_803_367
QUICKNET_PERIOD_S: Final = 3
DST_G1: Final = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"


def round_at_or_after(
    t_ms: int, genesis_s: int = QUICKNET_GENESIS_S, period_s: int = QUICKNET_PERIOD_S
) -> int:
    """The first beacon round published at or after `t_ms` (ms since the epoch)."""
    genesis_ms, period_ms = genesis_s * 1000, period_s * 1000
    if t_ms <= genesis_ms:
        return 1
    return -(-(t_ms - genesis_ms) // period_ms) + 1


def round_time_ms(
    round_no: int, genesis_s: int = QUICKNET_GENESIS_S, period_s: int = QUICKNET_PERIOD_S
) -> int:
    """When a beacon round is published."""
    return (genesis_s + (round_no - 1) * period_s) * 1000


def message(round_no: int) -> bytes:
    """What the beacon signs for a round (unchained schemes such as quicknet)."""
    return hashlib.sha256(round_no.to_bytes(8, "big")).digest()


def randomness(signature: bytes) -> bytes:
    return hashlib.sha256(signature).digest()

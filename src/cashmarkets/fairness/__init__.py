"""Provable fairness, pure (standard library only; no clock, no randomness, no I/O).

    chain     committed seed chains: N seeds by repeated SHA-256, the last hash published first,
              then used backwards so each revealed seed hashes to the one before it
    drand     the public-entropy schedule (which drand round a game round must use) and the
              beacon message/randomness formulas; BLS signature checks live in `cashmarkets.beacons`
    derive    the round seed (HMAC-SHA256 over the chain seed, the beacon and the round's identity)
              and the seeded stream of integers drawn from it without bias

`docs/fairness.md` explains how a player verifies a round with these pieces.
"""

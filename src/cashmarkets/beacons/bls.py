"""BLS12-381 beacon signatures in drand's quicknet scheme (G1 signatures, G2 public keys), with
py-arkworks-bls12381. A beacon is valid when e(signature, g2) == e(H(message), public key)."""

from __future__ import annotations

import hashlib

import py_arkworks_bls12381 as bls

from cashmarkets.fairness import drand


class BeaconError(ValueError):
    """Malformed key or signature bytes."""


def verify(public_key: bytes, round_no: int, signature: bytes) -> bool:
    """Is `signature` the beacon of `round_no` under `public_key` (compressed G2, 96 bytes)?"""
    try:
        pk = bls.G2Point.from_compressed_bytes(public_key)
        sig = bls.G1Point.from_compressed_bytes(signature)
    except Exception:  # the library raises plain exceptions for bad points
        return False
    if round_no < 1:
        return False
    h = bls.G1Point.hash_to_curve(drand.message(round_no), drand.DST_G1)
    return bool(bls.GT.pairing_check([sig, -h], [bls.G2Point(), pk]))


class LocalBeacon:
    """A beacon of our own, in quicknet's format: same message, signature and check, with a key
    derived from a secret. It gives unpredictability only as far as the secret stays secret:
    use drand where the internet is reachable (docs/fairness.md)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise BeaconError("a local beacon key needs at least 32 secret bytes")
        order = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
        self._scalar = bls.Scalar(int.from_bytes(hashlib.sha256(secret).digest(), "big") % order or 1)
        self.public_key = (bls.G2Point() * self._scalar).to_compressed_bytes()

    def sign(self, round_no: int) -> bytes:
        h = bls.G1Point.hash_to_curve(drand.message(round_no), drand.DST_G1)
        signature: bytes = (h * self._scalar).to_compressed_bytes()
        return signature

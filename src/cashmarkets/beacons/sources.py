"""Where beacons come from: drand relays over HTTP (production) or a local beacon (default here,
where there is no internet). Both give `Beacon`s whose signatures are checked before use: a relay
is trusted for nothing but availability.

drand's HTTP API: `GET {relay}/{chain hash}/public/{round}` ->
`{"round": 657413, "randomness": "<hex>", "signature": "<hex>"}`; `.../info` describes the chain.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Final, Protocol

import msgspec

from cashmarkets.beacons.bls import LocalBeacon, verify
from cashmarkets.fairness import drand

HTTP_TIMEOUT_S: Final = 5.0
RESPONSE_BYTES_MAX: Final = 64 * 1024


class Beacon(msgspec.Struct, frozen=True, kw_only=True):
    round: int
    signature: bytes
    randomness: bytes


class BeaconUnavailable(Exception):
    """No valid beacon for the round yet (not published, relays down, or a relay lied)."""


class BeaconSource(Protocol):
    public_key: bytes

    async def fetch(self, round_no: int) -> Beacon: ...


def checked(public_key: bytes, round_no: int, signature: bytes, randomness: bytes | None = None) -> Beacon:
    """A beacon whose signature (and, if given, randomness) is valid; else BeaconUnavailable."""
    if not verify(public_key, round_no, signature):
        raise BeaconUnavailable(f"round {round_no}: bad signature")
    expected = drand.randomness(signature)
    if randomness is not None and randomness != expected:
        raise BeaconUnavailable(f"round {round_no}: randomness does not match the signature")
    return Beacon(round=round_no, signature=signature, randomness=expected)


class DrandHttp:
    """drand relays, tried in order; the answer must verify against the chain's public key."""

    def __init__(
        self,
        relays: list[str],
        chain_hash: str = drand.QUICKNET_CHAIN_HASH,
        public_key: bytes = bytes.fromhex(drand.QUICKNET_PUBLIC_KEY),
    ) -> None:
        if not relays:
            raise ValueError("at least one drand relay URL")
        self.relays = [r.rstrip("/") for r in relays]
        self.chain_hash = chain_hash
        self.public_key = public_key

    async def fetch(self, round_no: int) -> Beacon:
        errors = []
        for relay in self.relays:
            url = f"{relay}/{self.chain_hash}/public/{round_no}"
            try:
                body = await asyncio.to_thread(_get, url)
                data = json.loads(body)
                if data.get("round") != round_no:
                    raise BeaconUnavailable(f"{relay} answered round {data.get('round')}")
                return checked(
                    self.public_key,
                    round_no,
                    bytes.fromhex(data["signature"]),
                    bytes.fromhex(data["randomness"]) if "randomness" in data else None,
                )
            except (OSError, ValueError, KeyError, TypeError, BeaconUnavailable) as exc:
                errors.append(f"{relay}: {exc}")
        raise BeaconUnavailable("; ".join(errors))


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        if response.status != 200:
            raise BeaconUnavailable(f"HTTP {response.status}")
        body: bytes = response.read(RESPONSE_BYTES_MAX + 1)
    if len(body) > RESPONSE_BYTES_MAX:
        raise BeaconUnavailable("response too large")
    return body


class LocalSource:
    """Beacons signed here, on quicknet's schedule, by a key from a secret (docs/fairness.md: it
    is only as unpredictable as the secret is secret)."""

    def __init__(self, secret: bytes) -> None:
        self._beacon = LocalBeacon(secret)
        self.public_key = self._beacon.public_key

    async def fetch(self, round_no: int) -> Beacon:
        return checked(self.public_key, round_no, self._beacon.sign(round_no))

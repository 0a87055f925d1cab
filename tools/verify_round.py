#!/usr/bin/env python3
"""Verify a Cash Markets chart round on your own machine:

    python3 verify_round.py ROUND.json [--aptos-node URL]

Standard library only (plus py-arkworks-bls12381 for the beacon signatures, if installed; without
it those checks are reported as skipped and the exit code is 2). It re-implements the published
rules on purpose instead of importing the server's code, and checks:

  1. the seed chain: the revealed seed, hashed `roundInChain` times, is the published commitment;
  2. the start beacon's round is the first one published at or after the round's start;
  3. each beacon's BLS signature (drand quicknet scheme) against the beacon public key;
  4. rounds with an on-chain seed (Aptos adapter): with --aptos-node (any fullnode's REST API,
     e.g. https://fullnode.mainnet.aptoslabs.com/v1), that the chain drew this seed for this round
     and holds the hash of the revealed seed as the round's commitment; skipped without it;
  5. every candle, recomputed from the seed, the beacons, the on-chain seed and the model.

Exit 0: every check holds. Exit 1: something does not. Exit 2: something could not be checked.
The JSON is what `GET /api/v1/chartgame/rounds/{id}/verify` returns (docs/fairness.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import urllib.request

VERSION = "cashmarkets/chartgame/v1"
WORD = 1 << 64


class Stream:
    def __init__(self, key: bytes) -> None:
        self.key, self.block, self.buffer, self.offset = key, 0, b"", 0

    def word(self) -> int:
        if self.offset + 8 > len(self.buffer):
            self.buffer = hmac.new(self.key, self.block.to_bytes(8, "big"), hashlib.sha256).digest()
            self.block += 1
            self.offset = 0
        value = int.from_bytes(self.buffer[self.offset : self.offset + 8], "big")
        self.offset += 8
        return value

    def below(self, n: int) -> int:
        limit = WORD - WORD % n
        while True:
            w = self.word()
            if w < limit:
                return w % n


def candle(stream: Stream, index: int, prev: int, m: dict) -> list[int]:
    p = o = h = low = prev
    volume = 0
    v = m["volatilityBp"]
    for _ in range(m["subTicks"]):
        r = -v + stream.below(2 * v + 1) + m["driftBp"]
        if m["jumpPpm"] and stream.below(1_000_000) < m["jumpPpm"]:
            r += m["jumpBp"] if stream.below(2) else -m["jumpBp"]
        p = max(1, p * (10_000 + r) // 10_000)
        h, low, volume = max(h, p), min(low, p), volume + abs(r)
    return [index, o, h, low, p, volume]


def first_beacon_round(start_ms: int, genesis_s: int, period_s: int) -> int:
    if start_ms <= genesis_s * 1000:
        return 1
    return -(-(start_ms - genesis_s * 1000) // (period_s * 1000)) + 1


def bls_verify(public_key: bytes, round_no: int, signature: bytes, dst: bytes) -> bool | None:
    try:
        import py_arkworks_bls12381 as bls
    except ImportError:
        return None
    try:
        pk = bls.G2Point.from_compressed_bytes(public_key)
        sig = bls.G1Point.from_compressed_bytes(signature)
    except Exception:
        return False
    h = bls.G1Point.hash_to_curve(hashlib.sha256(round_no.to_bytes(8, "big")).digest(), dst)
    return bool(bls.GT.pairing_check([sig, -h], [bls.G2Point(), pk]))


def aptos_draw(node: str, module: str, game: str, round_no: int) -> tuple[bytes, bytes]:
    """(seed, commitment) the chain holds for the round: the module's `seed_of` view function."""
    body = json.dumps(
        {"function": f"{module}::seed_of", "type_arguments": [], "arguments": [game, str(round_no)]}
    )
    request = urllib.request.Request(
        node.rstrip("/") + "/view", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        seed, commitment, _txn = json.load(response)
    return bytes.fromhex(seed[2:]), bytes.fromhex(commitment[2:])


def verify(doc: dict, aptos_node: str | None = None) -> tuple[list[tuple[str, bool | None]], bool]:
    checks: list[tuple[str, bool | None]] = []
    seed = bytes.fromhex(doc["seed"])
    link = seed
    for _ in range(doc["chain"]["roundInChain"]):
        link = hashlib.sha256(link).digest()
    checks.append(("seed chain reaches the commitment", link.hex() == doc["chain"]["commitment"]))
    scheme = doc["beaconScheme"]
    beacons = doc["beacons"]
    expected = first_beacon_round(doc["startMs"], scheme["genesisS"], scheme["periodS"])
    checks.append(("start beacon round fixed by the schedule", beacons[0]["round"] == expected))
    rounds = [b["round"] for b in beacons]
    checks.append(("beacons follow each other", rounds == list(range(rounds[0], rounds[0] + len(rounds)))))
    pk = bytes.fromhex(scheme["publicKey"])
    for b in beacons:
        checks.append(
            (
                f"beacon {b['round']} signature",
                bls_verify(pk, b["round"], bytes.fromhex(b["signature"]), scheme["dst"].encode()),
            )
        )
    onchain = doc.get("onchain")
    extra = b""
    if onchain:
        extra = bytes.fromhex(onchain["seed"])
        if aptos_node is None:
            checks.append((f"on-chain seed ({onchain['chain']}; pass --aptos-node URL to check)", None))
        else:
            chain_seed, chain_commitment = aptos_draw(
                aptos_node, onchain["module"], doc["game"], doc["round"]
            )
            checks.append(("on-chain seed is the chain's record", chain_seed == extra))
            checks.append(
                (
                    "on-chain round commitment is the revealed seed's hash",
                    chain_commitment == hashlib.sha256(seed).digest(),
                )
            )
    randomness = [hashlib.sha256(bytes.fromhex(b["signature"])).digest() for b in beacons]
    msg = (
        VERSION.encode()
        + b"\x00"
        + doc["game"].encode()
        + b"\x00"
        + doc["round"].to_bytes(8, "big")
        + randomness[0]
        + extra
    )
    key = hmac.new(seed, msg, hashlib.sha256).digest()
    stream = Stream(key)
    mixes = {b["fromCandle"]: (b["round"], r) for b, r in zip(beacons[1:], randomness[1:], strict=True)}
    m = doc["model"]
    prev = m["startPriceTicks"]
    candles_ok = len(doc["candles"]) == doc["candlesPerRound"]
    for i, got in enumerate(doc["candles"]):
        if i in mixes:
            b, r = mixes[i]
            key = hmac.new(key, b"mix" + b.to_bytes(8, "big") + r, hashlib.sha256).digest()
            stream = Stream(key)
        want = candle(stream, i, prev, m)
        if list(got) != want:
            candles_ok = False
            checks.append((f"candle {i}", False))
            break
        prev = want[4]
    checks.append(("every candle recomputed", candles_ok))
    return checks, all(ok is not False for _, ok in checks)


def main() -> int:
    args = sys.argv[1:]
    aptos_node = None
    if len(args) == 3 and args[1] == "--aptos-node":
        aptos_node = args[2]
        args = args[:1]
    if len(args) != 1:
        print(__doc__)
        return 1
    with open(args[0]) as f:
        doc = json.load(f)
    checks, ok = verify(doc, aptos_node)
    for name, result in checks:
        print(f"{'ok  ' if result else 'SKIP' if result is None else 'FAIL'} {name}")
    if not ok:
        return 1
    return 2 if any(result is None for _, result in checks) else 0


if __name__ == "__main__":
    sys.exit(main())

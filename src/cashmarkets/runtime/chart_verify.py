"""The server's own check of a chart round's verification document (`cashmarkets verify round`);
`tools/verify_round.py` is the independent, standard-library version players run."""

from __future__ import annotations

import hashlib
from typing import Any

from cashmarkets.beacons.bls import verify as bls_verify
from cashmarkets.core.products.chartgame import ModelParams, mixed_key, next_candle
from cashmarkets.fairness import drand
from cashmarkets.fairness.derive import Stream, round_seed


def verify_document(
    doc: dict[str, Any], on_chain: tuple[bytes, bytes] | None = None
) -> list[tuple[str, bool]]:
    """Every check of the document, named, in order; the round is fair when all hold.
    `on_chain`: (seed, commitment) as the chain holds them for the round, read by the caller."""
    checks: list[tuple[str, bool]] = []
    seed = bytes.fromhex(doc["seed"])
    link = seed
    for _ in range(doc["chain"]["roundInChain"]):
        link = hashlib.sha256(link).digest()
    checks.append(("seed chain reaches the commitment", link.hex() == doc["chain"]["commitment"]))
    scheme = doc["beaconScheme"]
    beacons = doc["beacons"]
    first = drand.round_at_or_after(doc["startMs"], scheme["genesisS"], scheme["periodS"])
    checks.append(("start beacon round fixed by the schedule", beacons[0]["round"] == first))
    rounds = [b["round"] for b in beacons]
    checks.append(("beacons follow each other", rounds == list(range(rounds[0], rounds[0] + len(rounds)))))
    public_key = bytes.fromhex(scheme["publicKey"])
    for b in beacons:
        checks.append(
            (
                f"beacon {b['round']} signature",
                bls_verify(public_key, b["round"], bytes.fromhex(b["signature"])),
            )
        )
    m = doc["model"]
    model = ModelParams(
        start_price_ticks=m["startPriceTicks"],
        price_decimals=m["priceDecimals"],
        sub_ticks=m["subTicks"],
        volatility_bp=m["volatilityBp"],
        drift_bp=m["driftBp"],
        jump_ppm=m["jumpPpm"],
        jump_bp=m["jumpBp"],
    )
    onchain = doc.get("onchain")
    extra = bytes.fromhex(onchain["seed"]) if onchain else b""
    if on_chain is not None:
        chain_seed, chain_commitment = on_chain
        checks.append(("on-chain seed is the chain's record", bool(onchain) and chain_seed == extra))
        checks.append(
            (
                "on-chain round commitment is the revealed seed's hash",
                chain_commitment == hashlib.sha256(seed).digest(),
            )
        )
    signatures = [bytes.fromhex(b["signature"]) for b in beacons]
    key = round_seed(seed, doc["game"], doc["round"], drand.randomness(signatures[0]), extra)
    stream = Stream(key)
    mixes = {b["fromCandle"]: (b["round"], s) for b, s in zip(beacons[1:], signatures[1:], strict=True)}
    prev = model.start_price_ticks
    candles_ok = len(doc["candles"]) == doc["candlesPerRound"]
    for i, got in enumerate(doc["candles"]):
        if i in mixes:
            b, s = mixes[i]
            key = mixed_key(key, b, drand.randomness(s))
            stream = Stream(key)
        c = next_candle(stream, i, prev, model)
        if list(got) != [c.index, c.open, c.high, c.low, c.close, c.volume]:
            candles_ok = False
            break
        prev = c.close
    checks.append(("every candle recomputed", candles_ok))
    return checks

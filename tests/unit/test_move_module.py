"""The round_seed Move module (move/round_seed) against what the adapter and the local node
assume of it. No Move compiler runs here, so these read the source: the entry functions' parameter
types (the adapter's BCS arguments), the randomness deposit (the adapter's max gas), the
undergasing rule (nothing can abort after the draw), the abort codes and the views."""

from __future__ import annotations

import re
from pathlib import Path

from cashmarkets.onchain.aptos import DRAW_MAX_GAS
from tests.fakes.aptos import ABORTS

SOURCE = (
    Path(__file__).resolve().parents[2] / "move" / "round_seed" / "sources" / "round_seed.move"
).read_text()


def function(name: str) -> tuple[str, str, list[str], str]:
    """(attributes and modifiers before it, its parameters, their types, its body)."""
    match = re.search(
        r"((?:#\[[^\]]*\]\s*)*)((?:public\s+)?(?:entry\s+)?)fun\s+" + name + r"\s*\(([^)]*)\)[^{]*\{",
        SOURCE,
    )
    assert match, name
    depth, i = 1, match.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(SOURCE[i], 0)
        i += 1
    params = [p.strip() for p in match.group(3).split(",") if p.strip()]
    types = [p.split(":", 1)[1].strip() for p in params]
    return match.group(1) + match.group(2), match.group(3), types, SOURCE[match.end() : i - 1]


def test_draw_seed_is_a_private_randomness_entry_with_the_adapters_deposit() -> None:
    head, _, types, body = function("draw_seed")
    assert f"#[randomness(max_gas = {DRAW_MAX_GAS})]" in head
    assert "entry" in head and "public" not in head  # a randomness function may not be public
    assert types == ["&signer", "String", "u64", "vector<u8>"]  # Serializer.str, u64, to_bytes
    draw_at = body.index("randomness::bytes(SEED_BYTES)")
    after = body[draw_at:]
    # Undergasing: every abort comes before the draw; after it, one path whatever the bytes.
    assert "assert!" not in after and "if (" not in after and "abort" not in after
    assert "assert!(!table::contains(&registry.draws, key), E_ALREADY_DRAWN)" in body[:draw_at]


def test_commit_chain_takes_what_the_adapter_sends() -> None:
    head, _, types, body = function("commit_chain")
    assert "public entry" in head
    assert types == ["&signer", "String", "u64", "vector<u8>", "u64"]
    assert "E_ALREADY_COMMITTED" in body and "E_NOT_OPERATOR" in body


def test_views_and_abort_codes_match_the_client_and_the_local_node() -> None:
    head, _, types, _ = function("seed_of")
    assert "#[view]" in head and types == ["String", "u64"]
    assert re.search(r"fun seed_of\([^)]*\): \(vector<u8>, vector<u8>, vector<u8>\)", SOURCE)
    head, _, types, _ = function("chain_commitment")
    assert "#[view]" in head and types == ["String", "u64"]
    assert re.search(r"fun chain_commitment\([^)]*\): \(vector<u8>, vector<u8>\)", SOURCE)
    codes = {int(v): k for k, v in re.findall(r"const (E_\w+): u64 = (\d+);", SOURCE)}
    assert codes == ABORTS
    assert re.search(r"const SEED_BYTES: u64 = 32;", SOURCE)

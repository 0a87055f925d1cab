"""The Aptos chain adapter: the real aptos-sdk client code against a local server answering like
an Aptos fullnode (tests/fakes/aptos.py: BCS transactions with their Ed25519 signatures checked,
the round_seed module run in Python). Then the chart scheduler with the adapter: every round mixes
an on-chain seed, and both verifiers check it against the node."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aptos_sdk.account import Account

from cashmarkets.beacons.sources import LocalSource
from cashmarkets.core.products.chartgame import (
    ChainCommitted,
)
from cashmarkets.onchain.adapter import ChainConflict, ChainError
from cashmarkets.onchain.aptos import DRAW_MAX_GAS, AptosAdapter
from cashmarkets.runtime.chart_scheduler import ChainStore, ChartScheduler
from cashmarkets.runtime.chart_verify import verify_document
from tests.fakes.aptos import FakeAptosNode
from tests.integration.chart_helpers import (
    GAME,
    play_until_settled,
    round_document,
    run_tool,
    runtime,
    settled_of,
)
from tests.support.ports import free_port

COMMITMENT = hashlib.sha256(b"a chain link").digest()


@pytest.fixture
def operator() -> Account:
    return Account.generate()


@pytest.fixture
def node(operator: Account) -> Iterator[FakeAptosNode]:
    with FakeAptosNode(str(operator.address())) as fake:
        fake.fund(str(operator.address()))
        yield fake


def adapter_for(node: FakeAptosNode, operator: Account, **kw: Any) -> AptosAdapter:
    return AptosAdapter(node.url, operator.private_key.aip80(), **kw)


def functions(node: FakeAptosNode) -> list[str]:
    return [s["function"].rsplit("::", 1)[1] for s in node.submitted]


async def test_a_round_seed_is_drawn_once_and_read_back(node: FakeAptosNode, operator: Account) -> None:
    adapter = adapter_for(node, operator)
    try:
        draw = await adapter.draw_seed("btc-30s", 7, COMMITMENT)
        again = await adapter.draw_seed("btc-30s", 7, COMMITMENT)
    finally:
        await adapter.close()
    stored_seed, stored_commitment, stored_txn = node.draws[("btc-30s", 7)]
    assert draw.seed == stored_seed and len(draw.seed) == 32
    assert stored_commitment == COMMITMENT
    assert draw.txn_hash == "0x" + stored_txn.hex() == node.submitted[0]["hash"]
    assert draw.network == 4 and draw.module == f"{operator.address()}::round_seed"
    assert again == draw  # the second call read the record: no second draw
    assert functions(node) == ["draw_seed"]
    # The draw pays the module's randomness deposit exactly (undergasing guard).
    assert node.submitted[0]["max_gas_amount"] == DRAW_MAX_GAS


async def test_chain_commitments_are_published_once(node: FakeAptosNode, operator: Account) -> None:
    adapter = adapter_for(node, operator)
    try:
        first = await adapter.commit_chain("btc-30s", 1, COMMITMENT, 10_000)
        second = await adapter.commit_chain("btc-30s", 1, COMMITMENT, 10_000)
        with pytest.raises(ChainConflict):
            await adapter.commit_chain("btc-30s", 1, hashlib.sha256(b"another").digest(), 10_000)
    finally:
        await adapter.close()
    assert first == second == node.submitted[0]["hash"]
    assert functions(node) == ["commit_chain"]
    assert node.chains[("btc-30s", 1)][0] == COMMITMENT


async def test_a_lost_answer_is_recovered_without_drawing_twice(
    node: FakeAptosNode, operator: Account
) -> None:
    adapter = adapter_for(node, operator)
    node.lose_submit_response = True  # executed on chain; the answer never arrived
    try:
        with pytest.raises(ChainError):
            await adapter.draw_seed("g", 1, COMMITMENT)
        draw = await adapter.draw_seed("g", 1, COMMITMENT)
    finally:
        await adapter.close()
    assert functions(node) == ["draw_seed"]
    assert draw.seed == node.draws[("g", 1)][0]


async def test_pending_transactions_are_waited_for(node: FakeAptosNode, operator: Account) -> None:
    node.pending_polls = 3
    adapter = adapter_for(node, operator)
    try:
        draw = await adapter.draw_seed("g", 2, COMMITMENT)
    finally:
        await adapter.close()
    assert draw.seed == node.draws[("g", 2)][0]


async def test_failures_are_chain_errors(node: FakeAptosNode, operator: Account) -> None:
    # A node that is down.
    node.unavailable = 1
    adapter = adapter_for(node, operator)
    try:
        with pytest.raises(ChainError):
            await adapter.draw_seed("g", 1, COMMITMENT)
        # An event that disagrees with the module's record.
        node.lie_in_event = True
        with pytest.raises(ChainError, match="disagrees"):
            await adapter.draw_seed("g", 2, COMMITMENT)
        node.lie_in_event = False
        # A round drawn for another commitment is never used.
        other = hashlib.sha256(b"other").digest()
        with pytest.raises(ChainConflict):
            await adapter.draw_seed("g", 2, other)
    finally:
        await adapter.close()
    # Someone else's module: the operator check aborts the transaction.
    stranger = Account.generate()
    node.fund(str(stranger.address()))
    foreign = AptosAdapter(node.url, stranger.private_key.hex(), str(operator.address()))
    try:
        with pytest.raises(ChainError, match="E_NOT_OPERATOR"):
            await foreign.draw_seed("g", 3, COMMITMENT)
    finally:
        await foreign.close()
    assert ("g", 3) not in node.draws
    # A node nobody answers at (connection refused): a chain error too, not a transport exception.
    gone = AptosAdapter(f"http://127.0.0.1:{free_port()}/v1", operator.private_key.hex())
    try:
        with pytest.raises(ChainError):
            await gone.draw_seed("g", 4, COMMITMENT)
        with pytest.raises(ChainError):
            await gone.seed_of("g", 4)
    finally:
        await gone.close()


async def test_rounds_mix_the_on_chain_seed_and_verify_against_the_node(
    tmp_path: Path, node: FakeAptosNode, operator: Account
) -> None:
    chains = ChainStore(tmp_path / "chains")
    adapter = adapter_for(node, operator)
    # A crash after the chain's commitment went on chain but before the engine committed it:
    # the next run must reuse that secret (the chain would refuse another commitment for id 1).
    precommitted = chains.create(GAME.game, 1, 100)
    await adapter.commit_chain(GAME.game, 1, precommitted.commitment, precommitted.length)
    rt = runtime(tmp_path)
    await rt.start()
    events: list[Any] = []
    rt.subscribe(events.extend)
    source = LocalSource(b"beacon-secret" * 3)
    scheduler = ChartScheduler(rt, GAME, source, chains, commit_ms=100, gap_ms=50, adapter=adapter)
    node.unavailable = 2  # the node is down at first: the scheduler retries, rounds still come
    try:
        await play_until_settled(rt, scheduler, events, 2)
    finally:
        await adapter.close()
    committed = next(e for e in events if isinstance(e, ChainCommitted))
    assert committed.commitment == precommitted.commitment
    assert committed.onchain_txn == "0x" + node.chains[(GAME.game, 1)][1].hex()
    settled = settled_of(events)
    assert len(settled) >= 2
    assert functions(node).count("commit_chain") == 1
    for s in settled[:2]:
        round_no = s.round.round_no
        assert s.onchain is not None and s.onchain.seed == node.draws[(GAME.game, round_no)][0]
        # The chain holds the hash of the seed revealed at settlement as the round's commitment.
        assert node.draws[(GAME.game, round_no)][1] == hashlib.sha256(s.seed).digest()
        doc = round_document(GAME, s, events, committed, source.public_key)
        seed, commitment, _txn = node.draws[(GAME.game, round_no)]
        assert all(ok for _, ok in verify_document(doc, (seed, commitment)))
        assert not all(ok for _, ok in verify_document(doc, (bytes(32), commitment)))
        path = tmp_path / f"round-{round_no}.json"
        path.write_text(json.dumps(doc))
        assert run_tool(path, "--aptos-node", node.url) == 0
        assert run_tool(path) == 2  # the on-chain seed could not be checked without a node
        bad = copy.deepcopy(doc)
        bad["onchain"]["seed"] = "00" * 32  # the candles no longer follow, and the chain disagrees
        path.write_text(json.dumps(bad))
        assert run_tool(path, "--aptos-node", node.url) == 1
        del bad["onchain"]  # as if the round had no on-chain seed: the candles do not follow
        path.write_text(json.dumps(bad))
        assert run_tool(path) == 1

"""The `aptos` chain adapter: the `round_seed` Move module (move/round_seed) through aptos-sdk.

Per chain: `commit_chain(game, chain, commitment, length)`. Per round, in its commit phase:
`draw_seed(game, round, commitment)`, a `#[randomness]` entry function that stores 32 random bytes
for (game, round) once and emits `SeedDrawn`. Both are idempotent here: before submitting, the
`seed_of` / `chain_commitment` view functions say whether it is done already (a restart between
the transaction and the engine command must not draw twice; the module would refuse anyway).

Transactions from the operator account go one at a time (one sequence number in flight); the
draw is submitted with `max_gas_amount` equal to the module's `#[randomness(max_gas)]` deposit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final

import httpx
import structlog
from aptos_sdk.account import Account
from aptos_sdk.account_address import AccountAddress
from aptos_sdk.async_client import ApiError, ClientConfig, RestClient
from aptos_sdk.bcs import Serializer
from aptos_sdk.transactions import (
    EntryFunction,
    RawTransaction,
    SignedTransaction,
    TransactionArgument,
    TransactionPayload,
)

from cashmarkets.core.products.chartgame import OnchainDraw
from cashmarkets.onchain.adapter import ChainConflict, ChainError

log = structlog.get_logger("cashmarkets.onchain")

MODULE_NAME: Final = "round_seed"
# Must equal `#[randomness(max_gas = ...)]` on `draw_seed` in move/round_seed/sources/round_seed.move.
DRAW_MAX_GAS: Final = 20_000
COMMIT_MAX_GAS: Final = 20_000
GAS_UNIT_PRICE: Final = 100
EXPIRATION_S: Final = 60
WAIT_S: Final = 30.0  # for a submitted transaction to commit
POLL_S: Final = 0.2
AIP80_PREFIX: Final = "ed25519-priv-"


class AptosReader:
    """The module's view functions on a node: all a verifier needs, with no key."""

    name = "aptos"

    def __init__(self, node_url: str, module: str) -> None:
        self.module = module  # "<address>::round_seed"
        self.client = RestClient(node_url.rstrip("/"), ClientConfig(http2=False))

    async def close(self) -> None:
        await self.client.close()  # type: ignore[no-untyped-call]

    async def network(self) -> int:
        try:
            return int(await self.client.chain_id())  # type: ignore[no-untyped-call]
        except (ApiError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            raise ChainError(f"aptos node: {exc!r}") from exc

    async def _view(self, function: str, args: list[str]) -> list[Any]:
        try:
            raw = await self.client.view(f"{self.module}::{function}", [], args)
            result = json.loads(raw)
        except (ApiError, httpx.HTTPError, OSError, ValueError) as exc:
            raise ChainError(f"view {function}: {exc!r}") from exc
        if not isinstance(result, list):
            raise ChainError(f"view {function}: not a list: {result!r}")
        return result

    async def seed_of(self, game: str, round_no: int) -> tuple[bytes, bytes, str]:
        """What the chain holds for a round: (seed, commitment, drawing txn); empty if not drawn."""
        seed, commitment, txn = await self._view("seed_of", [game, str(round_no)])
        return _hex_bytes(seed), _hex_bytes(commitment), _txn_hex(txn)

    async def _chain_commitment(self, game: str, chain_id: int) -> tuple[bytes, str]:
        commitment, txn = await self._view("chain_commitment", [game, str(chain_id)])
        return _hex_bytes(commitment), _txn_hex(txn)


class AptosAdapter(AptosReader):
    """The operator's side: commits chains and draws seeds with its account's transactions."""

    def __init__(
        self,
        node_url: str,
        private_key: str,
        module_address: str | None = None,
        *,
        wait_s: float = WAIT_S,
    ) -> None:
        self.account = Account.load_key(aip80(private_key))
        self.address = self.account.address()
        self.module_address = (
            AccountAddress.from_str_relaxed(module_address) if module_address else self.address
        )
        super().__init__(node_url, f"{self.module_address}::{MODULE_NAME}")
        self.wait_s = wait_s
        self._lock = asyncio.Lock()  # one sequence number in flight

    # ---- the two operations ---------------------------------------------------------------------------

    async def commit_chain(self, game: str, chain_id: int, commitment: bytes, length: int) -> str:
        known, txn = await self._chain_commitment(game, chain_id)
        if not known:
            args = [
                TransactionArgument(game, Serializer.str),
                TransactionArgument(chain_id, Serializer.u64),
                TransactionArgument(commitment, Serializer.to_bytes),
                TransactionArgument(length, Serializer.u64),
            ]
            done = await self._transact("commit_chain", args, COMMIT_MAX_GAS)
            if done["success"]:
                return str(done["hash"])
            if "E_ALREADY_COMMITTED" not in str(done.get("vm_status")):
                raise ChainError(f"commit_chain failed: {done.get('vm_status')}")
            known, txn = await self._chain_commitment(game, chain_id)
        if known != commitment:
            raise ChainConflict(f"{game} chain {chain_id} is committed on chain as {known.hex()}")
        return txn

    async def draw_seed(self, game: str, round_no: int, commitment: bytes) -> OnchainDraw:
        network = await self.network()
        seed, on_chain_commitment, txn = await self.seed_of(game, round_no)
        if not seed:
            args = [
                TransactionArgument(game, Serializer.str),
                TransactionArgument(round_no, Serializer.u64),
                TransactionArgument(commitment, Serializer.to_bytes),
            ]
            done = await self._transact("draw_seed", args, DRAW_MAX_GAS)
            if not done["success"] and "E_ALREADY_DRAWN" not in str(done.get("vm_status")):
                raise ChainError(f"draw_seed failed: {done.get('vm_status')}")
            # What verifiers will read is the module's record: take the seed from there, and
            # require the transaction's event to say the same.
            seed, on_chain_commitment, txn = await self.seed_of(game, round_no)
            if done["success"] and self._seed_event(done, game, round_no, commitment) != seed:
                raise ChainError(f"the SeedDrawn event of {done['hash']} disagrees with seed_of")
        if on_chain_commitment != commitment:
            raise ChainConflict(
                f"{game} round {round_no} was drawn for commitment {on_chain_commitment.hex()}"
            )
        if len(seed) != 32:
            raise ChainError(f"the chain drew {len(seed)} bytes, not 32")
        log.info("on-chain seed drawn", game=game, round=round_no, txn=txn)
        return OnchainDraw(chain=self.name, network=network, module=self.module, seed=seed, txn_hash=txn)

    # ---- reads ------------------------------------------------------------------------------------

    def _seed_event(self, txn: dict[str, Any], game: str, round_no: int, commitment: bytes) -> bytes:
        """The seed from the transaction's `SeedDrawn` event, checked against what was asked."""
        for event in txn.get("events", []):
            if event.get("type") != f"{self.module}::SeedDrawn":
                continue
            data = event.get("data", {})
            if (
                data.get("game") == game
                and str(data.get("round")) == str(round_no)
                and _hex_bytes(data.get("commitment", "0x")) == commitment
            ):
                return _hex_bytes(data.get("seed", "0x"))
        raise ChainError(f"no SeedDrawn event for {game} round {round_no} in {txn.get('hash')}")

    # ---- transactions -------------------------------------------------------------------------------

    async def _transact(self, function: str, args: list[TransactionArgument], max_gas: int) -> dict[str, Any]:
        """Sign, submit and wait for one entry-function call; the committed transaction (JSON)."""
        payload = TransactionPayload(EntryFunction.natural(self.module, function, [], args))
        async with self._lock:
            try:
                sequence = await self.client.account_sequence_number(self.address)
                raw = RawTransaction(
                    self.address,
                    sequence,
                    payload,
                    max_gas,
                    GAS_UNIT_PRICE,
                    int(time.time()) + EXPIRATION_S,
                    await self.network(),
                )
                signed = SignedTransaction(raw, self.account.sign_transaction(raw))
                txn_hash = await self.client.submit_bcs_transaction(signed)
            except (ApiError, httpx.HTTPError, OSError) as exc:
                raise ChainError(f"submit {function}: {exc!r}") from exc
            return await self._wait(txn_hash)

    async def _wait(self, txn_hash: str) -> dict[str, Any]:
        # Our own loop, not the SDK's: it polls once a second and signals a timeout by assert.
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                response = await self.client.client.get(
                    f"{self.client.base_url}/transactions/by_hash/{txn_hash}"
                )
            except (httpx.HTTPError, OSError) as exc:
                raise ChainError(f"wait {txn_hash}: {exc!r}") from exc
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                if body.get("type") != "pending_transaction":
                    return body
            elif response.status_code != 404:
                raise ChainError(f"wait {txn_hash}: {response.status_code} {response.text[:200]}")
            if time.monotonic() > deadline:
                raise ChainError(f"transaction {txn_hash} not committed after {self.wait_s} s")
            await asyncio.sleep(POLL_S)


def aip80(private_key: str) -> str:
    """An Ed25519 private key as AIP-80 writes it ("ed25519-priv-0x..."); plain hex accepted."""
    if private_key.startswith(AIP80_PREFIX):
        return private_key
    return AIP80_PREFIX + (private_key if private_key.startswith("0x") else "0x" + private_key)


def _hex_bytes(value: object) -> bytes:
    """A Move `vector<u8>` as the REST API writes it ("0x..." hex)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainError(f"not a hex byte vector: {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise ChainError(f"not a hex byte vector: {value!r}") from exc


def _txn_hex(value: object) -> str:
    """A transaction hash stored as `vector<u8>`: "0x"-prefixed hex, or "" when empty."""
    raw = _hex_bytes(value)
    return "0x" + raw.hex() if raw else ""

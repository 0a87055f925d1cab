"""A local server answering like an Aptos fullnode's REST API (`/v1`), running a Python model of
the `round_seed` Move module, so the real aptos-sdk client code is tested without a chain.

It does what a node does with the parts we use: decodes the BCS signed transaction, checks the
Ed25519 signature, that the key belongs to the sender, the chain id, the sequence number and the
expiry; executes the entry function (aborts as the module would); answers with the JSON shapes of
the real API (pending then committed transactions with events, view results, error bodies).
Knobs make it misbehave the ways a real node or network can.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from typing import Any

from aptos_sdk.account_address import AccountAddress
from aptos_sdk.bcs import Deserializer
from aptos_sdk.transactions import EntryFunction, SignedTransaction

from tests.fakes.http import JsonHandler, LocalServer

CHAIN_ID = 4  # a local testnet's id
TXN_PREFIX = hashlib.sha3_256(b"APTOS::Transaction").digest()
ABORTS = {
    1: "E_NOT_OPERATOR",
    2: "E_ALREADY_DRAWN",
    3: "E_BAD_COMMITMENT",
    4: "E_ALREADY_COMMITTED",
}


def error(status: int, message: str, code: str, vm_code: int | None = None) -> tuple[int, Any]:
    """An error answer in the API's shape."""
    return status, {"message": message, "error_code": code, "vm_error_code": vm_code}


class Abort(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class FakeAptosNode(LocalServer):
    def __init__(self, module_address: str) -> None:
        self.module_address = AccountAddress.from_str_relaxed(module_address)
        self.module = f"{self.module_address}::round_seed"
        self.sequence: dict[str, int] = {}
        self.transactions: dict[str, dict[str, Any]] = {}  # hash -> committed JSON
        self.submitted: list[dict[str, Any]] = []  # what was sent (for assertions)
        self.chains: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self.draws: dict[tuple[str, int], tuple[bytes, bytes, bytes]] = {}
        self.version = 1000
        self.lock = threading.Lock()
        # Knobs.
        self.pending_polls = 0  # GETs of a new transaction answered "pending" first
        self.unavailable = 0  # the next N requests answer 503
        self.lose_submit_response = False  # execute the next submission, answer 500
        self.lie_in_event = False  # SeedDrawn events carry another seed than the one stored
        self._polls: dict[str, int] = {}
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                with fake.lock:
                    self.send_json(*fake.get(self.path.split("?")[0]))

            def do_POST(self) -> None:
                body = self.body()
                with fake.lock:
                    path, kind = self.path.split("?")[0], self.headers.get("Content-Type", "")
                    self.send_json(*fake.post(path, kind, body))

        super().__init__(Handler, "/v1")

    # ---- routes -------------------------------------------------------------------------------------

    def _down(self) -> tuple[int, Any] | None:
        if self.unavailable > 0:
            self.unavailable -= 1
            return error(503, "service unavailable", "internal_error")
        return None

    def get(self, path: str) -> tuple[int, Any]:
        down = self._down()
        if down:
            return down
        parts = path.strip("/").split("/")
        if parts == ["v1"]:
            return 200, self._ledger_info()
        if len(parts) == 3 and parts[1] == "accounts":
            address = str(AccountAddress.from_str_relaxed(parts[2]))
            if address not in self.sequence:
                return error(
                    404,
                    f"Account not found by Address({address}) and Ledger version({self.version})",
                    "account_not_found",
                )
            return 200, {"sequence_number": str(self.sequence[address]), "authentication_key": address}
        if len(parts) == 4 and parts[1:3] == ["transactions", "by_hash"]:
            txn = self.transactions.get(parts[3])
            if txn is None:
                return error(
                    404, f"Transaction not found by Transaction hash({parts[3]})", "transaction_not_found"
                )
            polls = self._polls.get(parts[3], 0)
            if polls < self.pending_polls:
                self._polls[parts[3]] = polls + 1
                pending = {k: txn[k] for k in ("hash", "sender", "sequence_number", "payload", "signature")}
                pending.update(type="pending_transaction")
                return 200, pending
            return 200, txn
        return error(404, f"not found: {path}", "web_framework_error")

    def post(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        down = self._down()
        if down:
            return down
        if path == "/v1/view":
            request = json.loads(body)
            return self._view(request["function"], request["arguments"])
        if path == "/v1/transactions":
            if content_type != "application/x.aptos.signed_transaction+bcs":
                return 415, {"message": "unsupported content type", "error_code": "invalid_input"}
            return self._submit(body)
        return error(404, f"not found: {path}", "web_framework_error")

    def _ledger_info(self) -> dict[str, Any]:
        return {
            "chain_id": CHAIN_ID,
            "epoch": "2",
            "ledger_version": str(self.version),
            "oldest_ledger_version": "0",
            "ledger_timestamp": str(time.time_ns() // 1000),
            "node_role": "full_node",
            "oldest_block_height": "0",
            "block_height": str(self.version // 3),
            "git_hash": "0" * 40,
        }

    def fund(self, address: str) -> None:
        """Create the account (as the faucet would)."""
        self.sequence.setdefault(str(AccountAddress.from_str_relaxed(address)), 0)

    # ---- transactions -------------------------------------------------------------------------------

    def _submit(self, body: bytes) -> tuple[int, Any]:
        def invalid(message: str, vm_code: int | None = None) -> tuple[int, Any]:
            return error(400, message, "vm_error", vm_code)

        try:
            signed = SignedTransaction.deserialize(Deserializer(body))
        except Exception as exc:
            return error(400, f"invalid BCS: {exc}", "invalid_input")
        raw = signed.transaction
        sender = str(raw.sender)
        if not signed.verify():
            return invalid("Invalid transaction: INVALID_SIGNATURE", 1)
        inner = signed.authenticator.authenticator  # an Ed25519Authenticator for a single signer
        public_key = inner.public_key
        if str(AccountAddress.from_key(public_key)) != sender:
            return invalid("Invalid transaction: INVALID_AUTH_KEY", 2)
        if raw.chain_id != CHAIN_ID:
            return invalid("Invalid transaction: BAD_CHAIN_ID", 5)
        if raw.expiration_timestamps_secs < time.time():
            return invalid("Invalid transaction: TRANSACTION_EXPIRED", 6)
        if sender not in self.sequence:
            return invalid("Invalid transaction: SENDING_ACCOUNT_DOES_NOT_EXIST", 7)
        if raw.sequence_number < self.sequence[sender]:
            return invalid("Invalid transaction: SEQUENCE_NUMBER_TOO_OLD", 3)
        if raw.sequence_number > self.sequence[sender]:
            return invalid("Invalid transaction: SEQUENCE_NUMBER_TOO_NEW", 4)
        txn_hash = "0x" + hashlib.sha3_256(TXN_PREFIX + b"\x00" + body).hexdigest()
        entry: EntryFunction = raw.payload.value
        function = f"{entry.module}::{entry.function}"
        self.submitted.append(
            {"hash": txn_hash, "function": function, "max_gas_amount": raw.max_gas_amount, "sender": sender}
        )
        self.sequence[sender] += 1
        self.version += 1
        events: list[dict[str, Any]] = []
        success, vm_status, args_json = True, "Executed successfully", []
        try:
            args_json = self._execute(sender, entry, bytes.fromhex(txn_hash[2:]), events)
        except Abort as abort:
            success = False
            vm_status = f"Move abort in {self.module}: {ABORTS[abort.code]}({hex(abort.code)}): "
            events = []
        payload = {
            "function": function,
            "type_arguments": [],
            "arguments": args_json,
            "type": "entry_function_payload",
        }
        signature = {
            "public_key": "0x" + public_key.key.encode().hex(),
            "signature": "0x" + inner.signature.data().hex(),
            "type": "ed25519_signature",
        }
        self.transactions[txn_hash] = {
            "version": str(self.version),
            "hash": txn_hash,
            "state_change_hash": "0x" + secrets.token_hex(32),
            "event_root_hash": "0x" + secrets.token_hex(32),
            "state_checkpoint_hash": None,
            "gas_used": "512",
            "success": success,
            "vm_status": vm_status,
            "accumulator_root_hash": "0x" + secrets.token_hex(32),
            "changes": [],
            "sender": sender,
            "sequence_number": str(raw.sequence_number),
            "max_gas_amount": str(raw.max_gas_amount),
            "gas_unit_price": str(raw.gas_unit_price),
            "expiration_timestamp_secs": str(raw.expiration_timestamps_secs),
            "payload": payload,
            "signature": signature,
            "events": events,
            "timestamp": str(time.time_ns() // 1000),
            "type": "user_transaction",
        }
        if self.lose_submit_response:
            self.lose_submit_response = False
            return error(500, "connection reset", "internal_error")
        pending = {
            k: self.transactions[txn_hash][k] for k in ("hash", "sender", "sequence_number", "payload")
        }
        pending.update(
            max_gas_amount=str(raw.max_gas_amount),
            gas_unit_price=str(raw.gas_unit_price),
            expiration_timestamp_secs=str(raw.expiration_timestamps_secs),
            signature=signature,
        )
        return 202, pending

    def _execute(
        self, sender: str, entry: EntryFunction, txn_hash: bytes, events: list[dict[str, Any]]
    ) -> list[Any]:
        """The round_seed module, in Python. Returns the arguments as the JSON API shows them."""
        if str(entry.module) != self.module:
            raise Abort(1)
        args = [Deserializer(a) for a in entry.args]
        if sender != str(self.module_address):
            raise Abort(1)
        if entry.function == "commit_chain":
            game, chain, commitment, length = args[0].str(), args[1].u64(), args[2].to_bytes(), args[3].u64()
            if len(commitment) != 32:
                raise Abort(3)
            if (game, chain) in self.chains:
                raise Abort(4)
            self.chains[(game, chain)] = (commitment, txn_hash)
            events.append(
                self._event(
                    "ChainCommitted",
                    {
                        "game": game,
                        "chain": str(chain),
                        "commitment": "0x" + commitment.hex(),
                        "length": str(length),
                    },
                )
            )
            return [game, str(chain), "0x" + commitment.hex(), str(length)]
        if entry.function == "draw_seed":
            game, round_no, commitment = args[0].str(), args[1].u64(), args[2].to_bytes()
            if len(commitment) != 32:
                raise Abort(3)
            if (game, round_no) in self.draws:
                raise Abort(2)
            seed = secrets.token_bytes(32)  # the chain's randomness
            self.draws[(game, round_no)] = (seed, commitment, txn_hash)
            told = secrets.token_bytes(32) if self.lie_in_event else seed
            events.append(
                self._event(
                    "SeedDrawn",
                    {
                        "game": game,
                        "round": str(round_no),
                        "commitment": "0x" + commitment.hex(),
                        "seed": "0x" + told.hex(),
                    },
                )
            )
            return [game, str(round_no), "0x" + commitment.hex()]
        raise Abort(1)

    def _event(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "guid": {"creation_number": "0", "account_address": "0x0"},
            "sequence_number": "0",
            "type": f"{self.module}::{name}",
            "data": data,
        }

    def _view(self, function: str, arguments: list[str]) -> tuple[int, Any]:
        if function == f"{self.module}::seed_of":
            found = self.draws.get((arguments[0], int(arguments[1])))
            values = found if found is not None else (b"", b"", b"")
            return 200, ["0x" + v.hex() for v in values]
        if function == f"{self.module}::chain_commitment":
            commit = self.chains.get((arguments[0], int(arguments[1])))
            values2 = commit if commit is not None else (b"", b"")
            return 200, ["0x" + v.hex() for v in values2]
        return error(400, f"Function {function} not found", "invalid_input")

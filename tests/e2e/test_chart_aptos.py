"""Black-box: `cashmarkets serve` with the Aptos chain adapter, against a local server answering
like an Aptos node. The default game runs a round whose seed chain and round seed are on chain;
the published round verifies with the standalone verifier against the node, and with
`cashmarkets verify round`, which reads the chain through the adapter."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from aptos_sdk.account import Account

from tests.e2e.processes import Proc, free_port, wait_ready
from tests.fakes.aptos import FakeAptosNode
from tests.integration.chart_helpers import TOOL

GAME = "btc-30s"


def test_a_round_with_an_on_chain_seed_verifies_against_the_chain(tmp_path: Path) -> None:
    operator = Account.generate()
    with FakeAptosNode(str(operator.address())) as node:
        node.fund(str(operator.address()))
        env = {
            "CASHMARKETS_CHARTGAME": "1",
            "CASHMARKETS_PRICE_SOURCE": "none",
            "CASHMARKETS_CHAIN_ADAPTER": "aptos",
            "CASHMARKETS_APTOS_NODE_URL": node.url,
            "CASHMARKETS_APTOS_PRIVATE_KEY": operator.private_key.aip80(),
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        data = tmp_path / "data"
        server = Proc(["serve", "--data-dir", str(data), "--port", str(port)], env, tmp_path / "serve.log")
        try:
            wait_ready(server, base)
            doc = None
            with httpx.Client(base_url=base, timeout=10) as http:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and doc is None:
                    v = http.get(f"/api/v1/chartgame/rounds/{GAME}/1/verify")
                    if v.status_code == 200 and len(v.json()["candles"]) == v.json()["candlesPerRound"]:
                        doc = v.json()
                    else:
                        time.sleep(0.5)
                assert doc is not None, server.output()
                listed = http.get(f"/api/v1/chartgame/rounds/{GAME}/1").json()
        finally:
            assert server.stop() in (0, -signal.SIGTERM), server.output()
        seed, commitment, txn = node.draws[(GAME, 1)]
        assert doc["onchain"]["seed"] == seed.hex() and doc["onchain"]["txnHash"] == "0x" + txn.hex()
        assert commitment == hashlib.sha256(bytes.fromhex(doc["seed"])).digest()
        assert listed["onchainTxn"] == "0x" + txn.hex()
        assert doc["chain"]["onchainTxn"] == "0x" + node.chains[(GAME, 1)][1].hex()
        assert node.chains[(GAME, 1)][0].hex() == doc["chain"]["commitment"]
        path = tmp_path / "round.json"
        path.write_text(json.dumps(doc))
        verified = subprocess.run(
            [sys.executable, str(TOOL), str(path), "--aptos-node", node.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stdout
        assert "ok   on-chain seed is the chain's record" in verified.stdout
        cli = subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "verify", "round", GAME, "1", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        report = json.loads(cli.stdout.strip().splitlines()[-1])
        assert report["fair"] and report["checks"]["on-chain seed is the chain's record"] is True
        assert report["skipped"] == []
        # Without a node to ask, the on-chain seed is not vouched for: skipped, exit 2, not fair.
        unchecked = subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "verify", "round", GAME, "1", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env, "CASHMARKETS_APTOS_NODE_URL": ""},
        )
        assert unchecked.returncode == 2, unchecked.stdout + unchecked.stderr
        report = json.loads(unchecked.stdout.strip().splitlines()[-1])
        assert report["fair"] is None and report["skipped"] == ["on-chain seed is the chain's record"]

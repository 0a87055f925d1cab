"""Beacon sources through the real client code: drand relays over HTTP (a local server speaking
drand's API with recorded quicknet beacons; a relay that lies; one that is down), the local
beacon, and `cashmarkets verify beacon`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cashmarkets.beacons.sources import BeaconUnavailable, DrandHttp, LocalSource
from cashmarkets.fairness import drand
from tests.fakes.drand import FakeDrand
from tests.support.ports import free_port

SIG_657413 = (
    "b713718a38ae728dfd477991af2822e08d2f305e47718cef9f7848ce4050e7be41076862b98fad56e91a6b85b89cd97b"
)
SIG_2 = "b6b6a585449b66eb12e875b64fcbab3799861a00e4dbf092d99e969a5eac57dd3f798acf61e705fe4f093db926626807"
QUICKNET = {
    657413: {
        "signature": SIG_657413,
        "randomness": "fc1873a13f3545aeade8401532ef5519920652eee6b0d2b19ca12643b87b3587",
    },
    2: {"signature": SIG_2, "randomness": drand.randomness(bytes.fromhex(SIG_2)).hex()},
}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_drand_relays_are_checked_and_tried_in_order() -> None:
    with (
        FakeDrand(drand.QUICKNET_CHAIN_HASH, QUICKNET, lie=True) as liar,
        FakeDrand(drand.QUICKNET_CHAIN_HASH, QUICKNET) as honest,
    ):
        client = DrandHttp([dead_url(), liar.url, honest.url])
        beacon = await client.fetch(657413)
        assert beacon.randomness.hex() == QUICKNET[657413]["randomness"]
        assert liar.requests and honest.requests  # the lie was refused, the next relay asked
        assert (await client.fetch(2)).round == 2
        with pytest.raises(BeaconUnavailable):
            await client.fetch(657414)  # not published (425) anywhere
    with (
        FakeDrand(drand.QUICKNET_CHAIN_HASH, {657414: QUICKNET[657413]}) as wrong_round,
        pytest.raises(BeaconUnavailable, match="bad signature"),
    ):
        await DrandHttp([wrong_round.url]).fetch(657414)


async def test_the_local_source_signs_verifiable_beacons() -> None:
    source = LocalSource(b"s" * 32)
    beacon = await source.fetch(12345)
    assert beacon.randomness == drand.randomness(beacon.signature)
    other = LocalSource(b"t" * 32)
    assert (await other.fetch(12345)).randomness != beacon.randomness


def test_cli_verify_beacon_exit_codes() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "verify", "beacon", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("--chain", "quicknet", "--round", "657413", "--signature", QUICKNET[657413]["signature"])
    assert ok.returncode == 0 and QUICKNET[657413]["randomness"] in ok.stdout
    bad = run("--chain", "quicknet", "--round", "657414", "--signature", QUICKNET[657413]["signature"])
    assert bad.returncode == 1 and '"valid": false' in bad.stdout
    assert run("--round", "1", "--signature", "zz").returncode == 2

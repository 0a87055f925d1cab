"""Provable fairness: seed chains, the drand schedule, real quicknet beacons (checked with
py-arkworks and cross-checked with py_ecc), the round-seed derivation and its unbiased stream."""

from __future__ import annotations

import hashlib
import hmac
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cashmarkets.beacons.bls import LocalBeacon, verify
from cashmarkets.fairness import drand
from cashmarkets.fairness.chain import CHECKPOINT_EVERY, SeedChain, link, verify_link
from cashmarkets.fairness.derive import DERIVATION_VERSION, Stream, round_seed

PK = bytes.fromhex(drand.QUICKNET_PUBLIC_KEY)
SIG_657413 = bytes.fromhex(
    "b713718a38ae728dfd477991af2822e08d2f305e47718cef9f7848ce4050e7be41076862b98fad56e91a6b85b89cd97b"
)
RANDOMNESS_657413 = "fc1873a13f3545aeade8401532ef5519920652eee6b0d2b19ca12643b87b3587"
SIG_2 = bytes.fromhex(
    "b6b6a585449b66eb12e875b64fcbab3799861a00e4dbf092d99e969a5eac57dd3f798acf61e705fe4f093db926626807"
)


# ---- seed chains ---------------------------------------------------------------------------------


def test_a_chain_reveals_seeds_backwards_each_hashing_to_the_previous() -> None:
    start = bytes(range(32))
    chain = SeedChain(start, 5)
    naive = [start]
    for _ in range(5):
        naive.append(hashlib.sha256(naive[-1]).digest())
    assert chain.commitment == naive[5]
    seeds = [chain.seed(r) for r in range(1, 6)]
    assert seeds == [naive[4], naive[3], naive[2], naive[1], naive[0]]
    previous = chain.commitment
    for seed in seeds:
        assert verify_link(seed, previous)
        previous = seed
    assert not verify_link(seeds[1], chain.commitment)  # out of order
    assert not verify_link(seeds[0][:31], chain.commitment)


def test_golden_chain_vector() -> None:
    chain = SeedChain(b"\x00" * 32, 3)
    # sha256^3 of 32 zero bytes, pinned: a change to the chain rule breaks every published round.
    assert chain.commitment.hex() == link(link(link(b"\x00" * 32))).hex()
    assert chain.commitment.hex() == "12771355e46cd47c71ed1721fd5319b383cca3a1f9fce3aa1c8cd3bd37af20d7"


def test_checkpoints_give_the_same_seeds_as_hashing_from_the_start() -> None:
    start = hashlib.sha256(b"start").digest()
    length = 3 * CHECKPOINT_EVERY + 17
    chain = SeedChain(start, length)
    for r in (1, 2, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 1, length - 1, length):
        c = start
        for _ in range(length - r):
            c = link(c)
        assert chain.seed(r) == c
    with pytest.raises(IndexError):
        chain.seed(0)
    with pytest.raises(IndexError):
        chain.seed(length + 1)


# ---- drand ---------------------------------------------------------------------------------------


def test_the_beacon_round_is_the_first_at_or_after_the_start() -> None:
    g = drand.QUICKNET_GENESIS_S * 1000
    assert drand.round_at_or_after(g - 5_000) == 1
    assert drand.round_at_or_after(g) == 1
    assert drand.round_at_or_after(g + 1) == 2
    assert drand.round_at_or_after(g + 3_000) == 2
    assert drand.round_at_or_after(g + 3_001) == 3
    for r in (1, 2, 657413):
        assert drand.round_at_or_after(drand.round_time_ms(r)) == r


def test_real_quicknet_beacons_verify_and_give_their_randomness() -> None:
    assert verify(PK, 657413, SIG_657413)
    assert drand.randomness(SIG_657413).hex() == RANDOMNESS_657413
    assert not verify(PK, 657414, SIG_657413)  # the same signature is not the next round's
    assert verify(PK, 2, SIG_2)
    assert not verify(PK, 657413, SIG_2)
    assert not verify(PK, 657413, SIG_657413[:-1] + bytes([SIG_657413[-1] ^ 1]))
    assert not verify(PK[:50], 657413, SIG_657413)
    assert not verify(PK, 0, SIG_657413)


def test_a_local_beacon_signs_in_the_same_scheme() -> None:
    beacon = LocalBeacon(b"k" * 32)
    sig = beacon.sign(42)
    assert len(sig) == 48 and verify(beacon.public_key, 42, sig)
    assert not verify(beacon.public_key, 43, sig)
    assert not verify(PK, 42, sig)


@pytest.mark.slow
def test_py_ecc_agrees_on_a_real_beacon() -> None:
    """An independent pure-Python pairing check of round 657413 (slow: two py_ecc pairings)."""
    from py_ecc.bls.hash_to_curve import hash_to_G1
    from py_ecc.bls.point_compression import decompress_G1, decompress_G2
    from py_ecc.optimized_bls12_381 import G2, neg, pairing

    def g1(b: bytes):  # type: ignore[no-untyped-def]
        return decompress_G1(int.from_bytes(b, "big"))

    def g2(b: bytes):  # type: ignore[no-untyped-def]
        return decompress_G2((int.from_bytes(b[:48], "big"), int.from_bytes(b[48:], "big")))

    h = hash_to_G1(drand.message(657413), drand.DST_G1, hashlib.sha256)
    assert pairing(G2, g1(SIG_657413)) == pairing(g2(PK), h)
    assert pairing(G2, g1(SIG_657413)) != pairing(g2(PK), neg(h))


# ---- derivation and the stream -------------------------------------------------------------------


def test_round_seed_layout_is_the_documented_one() -> None:
    chain_seed = bytes(32)
    beacon = bytes.fromhex(RANDOMNESS_657413)
    got = round_seed(chain_seed, "btc-30s", 7, beacon)
    msg = DERIVATION_VERSION.encode() + b"\x00btc-30s\x00" + (7).to_bytes(8, "big") + beacon
    assert got == hmac.new(chain_seed, msg, hashlib.sha256).digest()
    assert round_seed(chain_seed, "btc-30s", 7, beacon, b"x") != got
    assert round_seed(chain_seed, "btc-30s", 8, beacon) != got
    assert round_seed(chain_seed, "eth-30s", 7, beacon) != got


def test_golden_stream_vector() -> None:
    stream = Stream(round_seed(bytes(32), "btc-30s", 7, bytes.fromhex(RANDOMNESS_657413)))
    words = [stream.word() for _ in range(5)]
    again = Stream(round_seed(bytes(32), "btc-30s", 7, bytes.fromhex(RANDOMNESS_657413)))
    assert [again.word() for _ in range(5)] == words
    # The first block's first word, recomputed by hand.
    key = round_seed(bytes(32), "btc-30s", 7, bytes.fromhex(RANDOMNESS_657413))
    block0 = hmac.new(key, (0).to_bytes(8, "big"), hashlib.sha256).digest()
    assert words[0] == int.from_bytes(block0[:8], "big") and words[3] == int.from_bytes(block0[24:], "big")
    block1 = hmac.new(key, (1).to_bytes(8, "big"), hashlib.sha256).digest()
    assert words[4] == int.from_bytes(block1[:8], "big")


@given(st.binary(min_size=0, max_size=100), st.integers(0, 40), st.integers(0, 12))
def test_the_stream_is_textbook_hmac_and_resumes_where_it_stood(key: bytes, skip: int, more: int) -> None:
    """For any key length (HMAC hashes keys above 64 bytes): word k of the stream is 64-bit word
    k % 4 of HMAC-SHA256(key, k // 4); a stream resumed at a position continues identically."""
    stream = Stream(key)
    got = [stream.word() for _ in range(skip)]
    position = stream.position
    resumed = Stream.at(key, position)
    got += [stream.word() for _ in range(more)]
    assert [resumed.word() for _ in range(more)] == got[skip:]
    for k, w in enumerate(got):
        block = hmac.new(key, (k // 4).to_bytes(8, "big"), hashlib.sha256).digest()
        assert w == int.from_bytes(block[8 * (k % 4) : 8 * (k % 4) + 8], "big")
    assert position == ((skip + 3) // 4, 8 * (skip - 4 * ((skip - 1) // 4)) if skip else 0)


class Scripted(Stream):
    """A stream whose words are given, to test rejection sampling at its edges."""

    def __init__(self, words: list[int]) -> None:
        super().__init__(b"")
        self.words = list(words)

    def word(self) -> int:
        return self.words.pop(0)


def test_rejection_sampling_edges() -> None:
    top = 1 << 64
    limit = top - top % 3
    assert Scripted([limit, limit + 1, top - 1, 5]).below(3) == 2  # three rejected, then 5 % 3
    assert Scripted([limit - 1]).below(3) == (limit - 1) % 3
    assert Scripted([top - 1]).below(1) == 0
    assert Scripted([top - 1]).below(top) == top - 1  # a power of two: nothing is rejected
    assert Scripted([7]).between(10, 12) == 10 + 7 % 3
    with pytest.raises(ValueError):
        Stream(b"k").below(0)
    with pytest.raises(ValueError):
        Stream(b"k").between(3, 2)


# ---- statistics of the stream (99 % confidence; fixed seeds, so never flaky) -----------------------


def draws(n: int, k: int, seed: bytes = b"stats") -> list[int]:
    stream = Stream(hashlib.sha256(seed).digest())
    return [stream.below(k) for _ in range(n)]


def chi_square(values: list[int], k: int) -> float:
    counts = [0] * k
    for v in values:
        counts[v] += 1
    expected = len(values) / k
    return sum((c - expected) ** 2 / expected for c in counts)


def runs_z(values: list[int]) -> float:
    """Wald-Wolfowitz runs test above/below the median, as a z score."""
    median = sorted(values)[len(values) // 2]
    signs = [v >= median for v in values]
    n1 = sum(signs)
    n2 = len(signs) - n1
    runs = 1 + sum(1 for a, b in itertools.pairwise(signs) if a != b)
    mean = 2 * n1 * n2 / (n1 + n2) + 1
    var = 2 * n1 * n2 * (2 * n1 * n2 - n1 - n2) / ((n1 + n2) ** 2 * (n1 + n2 - 1))
    return float((runs - mean) / var**0.5)


def serial_correlation(values: list[int]) -> float:
    n = len(values)
    mean = sum(values) / n
    num = sum((values[i] - mean) * (values[i + 1] - mean) for i in range(n - 1))
    den = sum((v - mean) ** 2 for v in values)
    return float(num / den)


def check_statistics(n: int) -> None:
    # df = 9: the 99 % critical value of chi-square is 21.666; df = 99: 134.642.
    assert chi_square(draws(n, 10), 10) < 21.666
    assert chi_square(draws(n, 100, b"other"), 100) < 134.642
    values = draws(n, 1_000_000, b"runs")
    assert abs(runs_z(values)) < 2.576
    # Serial correlation of n independent draws is ~N(0, 1/n): |r| < 2.576 / sqrt(n) at 99 %.
    assert abs(serial_correlation(values)) < 2.576 / n**0.5


def test_stream_statistics_small() -> None:
    check_statistics(20_000)


@pytest.mark.slow
def test_stream_statistics_one_million_draws() -> None:
    check_statistics(1_000_000)

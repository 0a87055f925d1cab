"""The engine's dedup table: the C one (`_native.Dedup`) against the Python one (`DedupTable`)
under random adds, lookups, evictions by age and by count, and reloads; and its limits."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashmarkets.core import native
from cashmarkets.core.dedup import DedupTable


def both() -> tuple[Any, DedupTable]:
    assert native.available()
    return native.dedup_table(), DedupTable()


def same(c: Any, p: DedupTable, probes: list[str]) -> None:
    assert len(c) == len(p)
    assert c.oldest_ns() == p.oldest_ns()
    assert c.entries() == p.entries()
    for key in probes:
        assert c.get(key) is p.get(key), key


@pytest.mark.parametrize("seed", range(8))
def test_the_c_table_behaves_as_the_python_one(seed: int) -> None:
    rng = random.Random(seed)
    c, p = both()
    ts = 0
    added: list[str] = []
    for step in range(6_000):
        roll = rng.random()
        if roll < 0.7:
            ts += rng.randint(0, 3)
            key = f"cmd-{seed}-{step}"
            result = object()
            c.add(key, ts, result)
            p.add(key, ts, result)
            added.append(key)
        elif roll < 0.85:
            oldest, limit = ts - rng.randint(0, 400), rng.randint(0, 3_000)
            c.evict(oldest, limit)
            p.evict(oldest, limit)
        elif roll < 0.86:
            entries = p.entries()[rng.randint(0, 5) :]
            c.load(entries)
            p.load(entries)
        if step % 97 == 0:
            same(c, p, [*rng.sample(added, min(50, len(added))), "never-added"])
    same(c, p, added)


OPS = st.tuples(st.sampled_from(("add", "evict")), st.integers(0, 50), st.integers(0, 40))


@settings(max_examples=100, deadline=None)
@given(st.lists(OPS, max_size=300))
def test_short_random_sequences_agree(ops: list[tuple[str, int, int]]) -> None:
    c, p = both()
    ts = 0
    for n, (kind, a, b) in enumerate(ops):
        if kind == "add":
            ts += a % 3
            key = f"k{n}"
            c.add(key, ts, n)
            p.add(key, ts, n)
        else:
            c.evict(ts - a, b)
            p.evict(ts - a, b)
        same(c, p, [f"k{i}" for i in range(n + 1)])


def test_a_large_table_grows_and_shrinks_back_to_empty() -> None:
    c, p = both()
    for i in range(200_000):
        c.add(f"id{i}", i, i)
        p.add(f"id{i}", i, i)
    assert len(c) == 200_000 and c.get("id123456") == 123456 and c.get("id200000") is None
    c.evict(150_000, 10**9)
    p.evict(150_000, 10**9)
    same(c, p, [f"id{i}" for i in range(0, 200_000, 997)])
    c.evict(10**9, 10**9)
    assert len(c) == 0 and c.oldest_ns() is None and c.get("id199999") is None


def test_bad_input_is_refused_not_crashed() -> None:
    c, _ = both()
    c.add("a", 1, "first")
    with pytest.raises(AssertionError):
        c.add("a", 2, "again")  # an id is stored once
    with pytest.raises(TypeError):
        c.add(7, 2, "x")  # command ids are str
    assert c.get(7) is None and c.get("a") == "first" and len(c) == 1


@pytest.mark.parametrize("reserved", [0, 40_000, 100_000, 300_000])
def test_a_reserved_table_holds_the_same_entries_across_its_jump(reserved: int) -> None:
    # Past 32k entries a reserved table grows straight to its reserved size (one rehash); below
    # it and past the reservation it grows by doubling. Entries, order and lookups never change.
    c, p = native.dedup_table(reserved), DedupTable()
    for i in range(120_000):
        c.add(f"r{i}", i, i)
        p.add(f"r{i}", i, i)
        if i in (32_767, 32_768, 32_769, 65_536, 99_999):
            assert c.get(f"r{i}") == i and c.get(f"r{i // 2}") == i // 2
    c.evict(0, 50_000)
    p.evict(0, 50_000)
    same(c, p, [f"r{i}" for i in range(0, 120_000, 211)])
    for i in range(120_000, 180_000):  # ring wrap-around after eviction, reserved or not
        c.add(f"r{i}", i, i)
        p.add(f"r{i}", i, i)
    same(c, p, [f"r{i}" for i in range(0, 180_000, 307)])


def test_reserve_refuses_bad_sizes() -> None:
    c, _ = both()
    with pytest.raises(ValueError):
        c.reserve(-1)
    with pytest.raises(ValueError):
        assert native.module is not None
        c.reserve(native.module.DEDUP_RESERVE_MAX + 1)
    with pytest.raises(TypeError):
        c.reserve("many")
    c.add("a", 1, "first")
    assert c.get("a") == "first"
    # An engine's limit beyond what reserve sizes for still works: the table grows past it.
    assert len(native.dedup_table(10**12)) == 0

"""The nesting-depth checks in front of every decoder of client input (ops/nesting.py)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashmarkets.ops.nesting import (
    NESTING_DEPTH_MAX,
    RECURSION_LIMIT,
    json_depth_within,
    msgpack_depth_within,
)

_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
_scalars |= st.floats(allow_nan=False) | st.binary(max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nest(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@given(_values, st.integers(0, 12))
@settings(max_examples=400)
def test_json_depth_matches_the_structure(value: Any, depth_max: int) -> None:
    text = msgspec.json.encode(value, order="sorted") if not _has_bytes(value) else b"[]"
    if text != b"[]":
        assert json_depth_within(text, depth_max) == (depth(value) <= depth_max)


@given(_values, st.integers(0, 12))
@settings(max_examples=400)
def test_msgpack_depth_matches_the_structure(value: Any, depth_max: int) -> None:
    assert msgpack_depth_within(msgspec.msgpack.encode(value), depth_max) == (depth(value) <= depth_max)


@given(st.binary(max_size=300), st.integers(0, 6))
@settings(max_examples=400)
def test_any_bytes_are_judged_without_raising(data: bytes, depth_max: int) -> None:
    assert json_depth_within(data, depth_max) in (True, False)
    assert msgpack_depth_within(data, depth_max) in (True, False)


def test_the_limit_itself_passes_and_one_more_level_does_not() -> None:
    codecs = ((msgspec.json.encode, json_depth_within), (msgspec.msgpack.encode, msgpack_depth_within))
    for encode, within in codecs:
        assert within(encode(nest(NESTING_DEPTH_MAX)))
        assert not within(encode(nest(NESTING_DEPTH_MAX + 1)))


def test_brackets_inside_strings_do_not_count() -> None:
    text = msgspec.json.encode({"note": "[" * 1000 + '\\"{' * 100, "list": [1, 2]})
    assert json_depth_within(text)
    assert json_depth_within(b'"a\\"[' + b"[" * 40)  # the escaped quote does not end the string...
    assert not json_depth_within(b'"a\\"b"' + b"[" * 40)  # ...the next quote does
    assert json_depth_within(b'"unterminated [[[[' + b"[" * 40)  # a string may run to the end
    assert not json_depth_within(b"[" * 40_000)


def test_truncated_and_huge_msgpack_containers() -> None:
    assert not msgpack_depth_within(b"\x91" * 40_000)
    assert not msgpack_depth_within(b"\xdc\x00\x01" * 100)  # array16 of one, 100 deep
    assert not msgpack_depth_within(b"\x81\xa1k" * 100)  # fixmap {"k": ...}, 100 deep
    assert msgpack_depth_within(b"\xdd\xff\xff\xff\xff")  # claims 4 billion items: the decoder refuses it
    assert msgpack_depth_within(b"\x92" * 10)  # 10 deep, truncated: within the limit


@pytest.mark.slow  # a fresh interpreter importing the whole server: a few seconds
def test_importing_everything_serve_imports_leaves_the_recursion_limit_alone() -> None:
    """py_ecc (under eth_account) raises the limit to 100,000 at import: a fresh interpreter that
    imports the whole server, as `serve` does, must still have the default."""
    code = (
        "import sys; import cashmarkets.cli, cashmarkets.api.app, cashmarkets.runtime.processes, "
        "cashmarkets.auth.wallets; print(sys.getrecursionlimit())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout) <= RECURSION_LIMIT


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    return False

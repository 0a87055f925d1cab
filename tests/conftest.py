"""Store databases for integration tests: a fresh PostgreSQL database per test on the real server
(127.0.0.1:5432), dropped afterwards, and a SQLite file in the test's temporary directory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cashmarkets.core import native
from cashmarkets.ops.settings import native_from_env
from cashmarkets.store import scratchdb


def pytest_configure(config: pytest.Config) -> None:
    # CASHMARKETS_NATIVE=0 (`make pytest-pure`): the engines the tests build directly run the
    # Python paths too, not only the ones the processes build from their settings.
    if not native_from_env():
        native.switch_off()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """`postgresql+asyncpg://…` of a new, empty database `cm_test_<hex>`; dropped after the test."""
    name = f"cm_test_{uuid.uuid4().hex}"
    url = await scratchdb.create_database(name)
    yield url
    await scratchdb.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """`sqlite+aiosqlite:///…` of a store file (not yet created) in the test's directory."""
    return f"sqlite+aiosqlite:///{(tmp_path / 'store' / 'store.db').as_posix()}"

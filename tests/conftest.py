"""Store databases for integration tests: a fresh PostgreSQL database per test on the real server
(127.0.0.1:5432), dropped afterwards, and a SQLite file in the test's temporary directory."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DATABASE = "postgres"


def _admin_roles() -> list[str]:
    roles = ["postgres"]
    for role in (getpass.getuser(), "root"):
        if role not in roles:
            roles.append(role)
    return roles


async def _admin_connect() -> tuple[asyncpg.Connection, str]:
    """A connection to the admin database, and the role that worked."""
    errors: list[str] = []
    for role in _admin_roles():
        try:
            connection = await asyncpg.connect(
                f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{PG_ADMIN_DATABASE}", timeout=10
            )
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{role}: {exc!r}")
            continue
        return connection, role
    raise RuntimeError(f"cannot connect to PostgreSQL on {PG_HOST}:{PG_PORT}: {'; '.join(errors)}")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """`postgresql+asyncpg://…` of a new, empty database `cm_test_<hex>`; dropped after the test."""
    name = f"cm_test_{uuid.uuid4().hex}"
    admin, role = await _admin_connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://{role}@{PG_HOST}:{PG_PORT}/{name}"
    admin, _ = await _admin_connect()
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """`sqlite+aiosqlite:///…` of a store file (not yet created) in the test's directory."""
    return f"sqlite+aiosqlite:///{(tmp_path / 'store' / 'store.db').as_posix()}"

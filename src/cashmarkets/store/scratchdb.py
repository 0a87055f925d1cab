"""Throwaway PostgreSQL databases on the local server (trust auth), for tests and benchmarks."""

from __future__ import annotations

import getpass
from typing import Any

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DATABASE = "postgres"


def _admin_roles() -> list[str]:
    roles = ["postgres"]
    for role in (getpass.getuser(), "root"):
        if role not in roles:
            roles.append(role)
    return roles


async def admin_connect() -> tuple[Any, str]:
    """A connection to the admin database, and the role that worked."""
    import asyncpg

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


async def create_database(name: str) -> str:
    """Create database `name`; return `postgresql+asyncpg://<role>@host:port/<name>`."""
    admin, role = await admin_connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"postgresql+asyncpg://{role}@{PG_HOST}:{PG_PORT}/{name}"


async def drop_database(name: str) -> None:
    admin, _ = await admin_connect()
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()

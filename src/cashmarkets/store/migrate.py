"""Run the store's Alembic migrations from code: no `alembic.ini`, the configuration is built here.

Alembic's commands are synchronous and its `env.py` drives an async engine with `asyncio.run`,
so each command runs on a worker thread (`asyncio.to_thread`), which has no event loop of its
own; these functions are therefore safe to await from a running loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import pool

from cashmarkets.products.registry import products as registered
from cashmarkets.store import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic keeps the running environment in module globals: one command at a time per process.
_alembic_lock = threading.Lock()


def product_versions() -> list[Path]:
    """Each registered product's own branch of revisions (ProductModule.projection.migrations)."""
    return [
        module.projection.migrations
        for module in registered()
        if module.projection is not None and module.projection.migrations is not None
    ]


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the packaged migrations (and the registered products') and
    the database at `url`.

    The URL travels in `config.attributes`, not in `sqlalchemy.url`, so a `%` in a password needs
    no ini-style escaping."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    extra = product_versions()
    if extra:  # else Alembic's default: script_location/versions
        locations = [MIGRATIONS_DIR / "versions", *extra]
        config.set_main_option("version_locations", os.pathsep.join(str(p) for p in locations))
    config.attributes["url"] = url
    return config


def _locked_upgrade(url: str, revision: str) -> None:
    # "head" is every branch's head: a product with its own tables is a branch of its own.
    revision = "heads" if revision == "head" else revision
    with _alembic_lock:
        command.upgrade(alembic_config(url), revision)


def _locked_downgrade(url: str, revision: str) -> None:
    with _alembic_lock:
        command.downgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`; a no-op when it is there already."""
    await asyncio.to_thread(_locked_upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ("base" removes every table)."""
    await asyncio.to_thread(_locked_downgrade, url, revision)


async def current(url: str) -> str | None:
    """The database's current revision (its branches' heads, joined by ","), or None when it has
    never been migrated."""
    engine = db.create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            heads = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_heads()
            )
    finally:
        await engine.dispose()
    return ",".join(sorted(heads)) or None


def head() -> str | None:
    """The newest revision among the packaged migrations (one per branch, joined by ",")."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    return ",".join(sorted(heads)) or None


class SchemaOutOfDate(RuntimeError):
    pass


async def require_head(url: str) -> None:
    """Distributed processes do not migrate on their own: refuse to start on an old schema."""
    found, wanted = await current(url), head()
    if found != wanted:
        raise SchemaOutOfDate(
            f"store schema is at {found!r}, this build needs {wanted!r}: run `cashmarkets migrate`"
        )

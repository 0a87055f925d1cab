"""Alembic environment for the platform store, SQLite and PostgreSQL alike.

Alembic runs this file for every command. The database URL comes from
`config.attributes["url"]` (set by `cashmarkets.store.migrate`), else from `sqlalchemy.url`.
A caller may instead hand over an open sync connection as `config.attributes["connection"]`.

Online, the migrations run on an async engine from `cashmarkets.store.db.create_engine`, driven
by `asyncio.run`; `cashmarkets.store.migrate` calls Alembic on a worker thread so that thread has
no running loop. Should this file still be run on a thread whose loop is running, the migrations
go to a fresh thread of their own.

Processes that start together may all migrate the same database: each backend takes a lock
before Alembic reads the current revision, so one migrates and the others then find it at head.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store import db, tables

config = context.config
target_metadata = tables.metadata

# pg_advisory_lock key held while migrating a PostgreSQL database (ASCII "cmmigrat").
PG_MIGRATION_LOCK_KEY = 0x636D_6D69_6772_6174
# How long a SQLite migration waits for another process's migration (or write) to finish.
SQLITE_MIGRATION_BUSY_TIMEOUT_MS = 120_000


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: set config.attributes['url'] (cashmarkets.store.migrate does) or sqlalchemy.url"
        )
    return str(url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (`alembic upgrade --sql`)."""
    url = db.database_url(_url(), Path("."))  # the URL is set, so no data directory is consulted
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=db.is_sqlite(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection, *, sqlite_transactional: bool = False) -> None:
    sqlite = connection.dialect.name == "sqlite"
    options: dict[str, Any] = {"render_as_batch": sqlite}
    if sqlite_transactional:
        options["transactional_ddl"] = True
    _configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
        if sqlite_transactional:
            _check_sqlite_foreign_keys(connection)


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    """Foreign keys are off while migrating (see `_sqlite_migration_engine`): check them before
    the commit, so a migration that breaks a reference rolls back instead."""
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        raise RuntimeError(f"the migration leaves foreign key violations: {violations[:10]}")


def _sqlite_migration_engine(url: str) -> AsyncEngine:
    """A SQLite engine whose transactions Alembic can use for the whole run.

    - `BEGIN IMMEDIATE` (sqlite3 otherwise opens no transaction before DDL): every migration of
      the run commits or rolls back as one, and the write lock, taken before Alembic reads the
      current revision, makes a second process wait instead of migrating the same database again.
    - foreign keys off: a batch migration rebuilds a table (copy, DROP, rename), and with foreign
      keys on, that DROP deletes the rows and cascades to the tables that refer to them.
    """
    engine = db.create_engine(url, poolclass=pool.NullPool)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Runs after db's listener, which has just set the store's PRAGMAs.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_MIGRATION_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()
        dbapi_connection.isolation_level = None  # transactions are begun by on_begin only

    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
    return engine


def _migrate_sqlite(connection: Connection) -> None:
    do_run_migrations(connection, sqlite_transactional=True)


def _migrate_postgres(connection: Connection) -> None:
    """Under a session advisory lock, taken before Alembic reads the current revision."""
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({PG_MIGRATION_LOCK_KEY})")
    connection.commit()  # Alembic must find no transaction open, or it leaves the commit to us
    try:
        do_run_migrations(connection)
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({PG_MIGRATION_LOCK_KEY})")
        connection.commit()


async def run_async_migrations() -> None:
    url = _url()
    migrate: Callable[[Connection], None]
    if db.is_sqlite(url):
        engine = _sqlite_migration_engine(url)
        migrate = _migrate_sqlite
    else:
        engine = db.create_engine(url, poolclass=pool.NullPool)
        migrate = _migrate_postgres
    try:
        async with engine.connect() as connection:
            await connection.run_sync(migrate)
    finally:
        await engine.dispose()


def _run(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the normal case: no loop on this thread
        asyncio.run(factory())
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as thread:
        thread.submit(lambda: asyncio.run(factory())).result()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        _run(run_async_migrations)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

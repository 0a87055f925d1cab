"""The store's Alembic migrations and engines on real SQLite files and a real PostgreSQL server:
the migrated schema is exactly `tables.py`, downgrades undo it, and rows round-trip."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import json
import shutil
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from cashmarkets.cli import app
from cashmarkets.store import db, migrate, tables
from cashmarkets.store.db import create_engine, database_url, is_postgres

HEAD = "0009"
VERSION_TABLE = "alembic_version"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test below runs once on a SQLite file and once on a fresh PostgreSQL database."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


async def _run_sync(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


async def schema_diff(url: str) -> list[Any]:
    """Alembic's autogenerate comparison of the live database with `tables.metadata`."""

    def compare(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": True, "include_name": _not_a_partition},
        )
        return list(compare_metadata(context, tables.metadata))

    return list(await _run_sync(url, compare))


def _not_a_partition(name: str | None, type_: str, parent_names: Any) -> bool:
    """Candle partitions are made at run time; they are not part of the declared schema."""
    prefixes = (tables.CANDLE_PARTITION_PREFIX, tables.CHART_CANDLE_PARTITION_PREFIX)
    return not (type_ == "table" and name is not None and name.startswith(prefixes))


async def table_names(url: str) -> set[str]:
    names = await _run_sync(url, lambda connection: sa.inspect(connection).get_table_names())
    return {n for n in names if _not_a_partition(n, "table", None)}


# ---- migrations -------------------------------------------------------------------------------


async def test_a_new_database_has_no_revision(store_url: str) -> None:
    assert await migrate.current(store_url) is None


async def test_upgrade_to_head_builds_exactly_the_schema_of_tables_py(store_url: str) -> None:
    await migrate.upgrade(store_url)
    assert await schema_diff(store_url) == []
    assert await table_names(store_url) == set(tables.metadata.tables) | {VERSION_TABLE}
    assert len(tables.metadata.tables) == 25
    assert await migrate.current(store_url) == HEAD
    assert migrate.head() == HEAD


async def test_the_named_constraints_and_indexes_exist(store_url: str) -> None:
    await migrate.upgrade(store_url)

    def names(connection: sa.Connection) -> dict[str, set[str | None]]:
        inspector = sa.inspect(connection)
        return {
            "ix": {ix["name"] for t in tables.metadata.tables for ix in inspector.get_indexes(t)},
            "uq": {uq["name"] for t in tables.metadata.tables for uq in inspector.get_unique_constraints(t)},
            "fk": {fk["name"] for t in tables.metadata.tables for fk in inspector.get_foreign_keys(t)},
        }

    found = await _run_sync(store_url, names)
    expected_ix = {ix.name for table in tables.metadata.tables.values() for ix in table.indexes}
    assert expected_ix == {
        "ix_wallet_identities_user_id",
        "ix_refresh_tokens_user_id",
        "ix_refresh_tokens_family_id",
        "ix_idempotency_keys_created_at_ns",
        "ix_audit_log_ts_ns",
        "ix_ledger_transfers_debit_account_id_transfer_id",
        "ix_ledger_transfers_credit_account_id_transfer_id",
        "ix_withdrawals_owner_hold_id",
        "ix_withdrawals_status_hold_id",
        "ix_positions_owner_status_position_id",
        "ix_position_events_position_id_seq",
        "ix_engine_snapshots_seq",
        "ix_spot_orders_owner_market_order_id",
        "ix_spot_orders_owner_client_order_id",
        "ix_spot_orders_market_side_remaining_lots_price_ticks",
        "ix_spot_trades_taker_owner_market_trade_id",
        "ix_spot_trades_maker_owner_market_trade_id",
        "ix_spot_trades_market_ts_ns",
        "ix_api_keys_user_id",
        "ix_chart_rounds_game_status_round_no",
        "ix_chart_positions_owner_position_id",
        "ix_chart_positions_game_round_no_payout",
    }
    assert expected_ix <= found["ix"]
    assert {"uq_users_email", "uq_accounts_owner_asset"} <= found["uq"]
    assert found["fk"] == {
        "fk_credentials_user_id_users",
        "fk_wallet_identities_user_id_users",
        "fk_refresh_tokens_user_id_users",
        "fk_api_keys_user_id_users",
    }


async def test_upgrade_at_head_again_is_a_no_op(store_url: str) -> None:
    await migrate.upgrade(store_url)
    await _insert_user(store_url, "u-1")
    await migrate.upgrade(store_url, "head")
    assert await migrate.current(store_url) == HEAD
    assert await schema_diff(store_url) == []
    assert await _count(store_url, tables.users) == 1


async def test_downgrade_to_base_removes_every_table_and_upgrade_rebuilds_them(store_url: str) -> None:
    await migrate.upgrade(store_url)
    await migrate.downgrade(store_url, "base")
    # Alembic keeps its (now empty) version table; every table of the schema is gone.
    assert await table_names(store_url) == {VERSION_TABLE}
    assert await migrate.current(store_url) is None

    await migrate.upgrade(store_url)
    assert await migrate.current(store_url) == HEAD
    assert await schema_diff(store_url) == []


async def test_processes_starting_together_all_find_the_database_migrated(store_url: str) -> None:
    """Each backend locks before Alembic reads the revision: one process migrates, the rest wait
    and then find the database at head."""
    script = "import asyncio, sys; import cashmarkets.store.migrate as m; asyncio.run(m.upgrade(sys.argv[1]))"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, store_url, stdout=PIPE, stderr=PIPE
        )
        for _ in range(4)
    ]
    outcomes = [(await p.communicate(), p.returncode) for p in processes]
    assert [code for _, code in outcomes] == [0] * 4, [err.decode()[-2000:] for (_, err), _ in outcomes]
    assert await migrate.current(store_url) == HEAD
    assert await schema_diff(store_url) == []


def _migrations_with(tmp_path: Path, name: str, body: str) -> Path:
    """A copy of the packaged migrations plus one more revision, 0099 after head, whose upgrade is `body`."""
    root = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "versions" / f"0099_{name}.py").write_text(
        textwrap.dedent(
            """\
            import sqlalchemy as sa
            from alembic import op

            revision = "0099"
            down_revision = "{head}"
            branch_labels = None
            depends_on = None


            def upgrade():
            {body}


            def downgrade():
                pass
            """
        ).format(head=HEAD, body=textwrap.indent(textwrap.dedent(body), "    "))
    )
    return root


async def _upgrade_from(script_location: Path, url: str) -> None:
    config = migrate.alembic_config(url)
    config.set_main_option("script_location", str(script_location))
    await asyncio.to_thread(command.upgrade, config, "head")


async def test_a_failing_migration_rolls_back_completely(store_url: str, tmp_path: Path) -> None:
    """The whole run is one transaction on both backends; on SQLite, whose foreign keys are off
    while migrating, a broken reference is caught before the commit."""
    await migrate.upgrade(store_url)
    broken = _migrations_with(
        tmp_path,
        "broken",
        """\
        op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True))
        op.execute(
            "INSERT INTO credentials (user_id, password_hash, updated_at_ns) VALUES ('ghost', 'x', 1)"
        )
        """,
    )
    with pytest.raises((RuntimeError, IntegrityError), match=r"foreign key|violat"):
        await _upgrade_from(broken, store_url)
    assert await migrate.current(store_url) == HEAD
    assert "scratch" not in await table_names(store_url)
    assert await _count(store_url, tables.credentials) == 0


async def test_a_batch_table_rebuild_keeps_the_rows_that_refer_to_it(store_url: str, tmp_path: Path) -> None:
    """On SQLite, batch mode rebuilds `users` (copy, DROP, rename); with foreign keys on, the DROP
    would cascade to `credentials`."""
    await migrate.upgrade(store_url)
    await _insert_user(store_url, "u-1")
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                tables.credentials.insert().values(user_id="u-1", password_hash="h", updated_at_ns=1)
            )
    finally:
        await engine.dispose()
    rebuild = _migrations_with(
        tmp_path,
        "rebuild",
        """\
        with op.batch_alter_table("users") as batch:  # a type change: SQLite rebuilds the table
            batch.alter_column("role", type_=sa.String(32), existing_nullable=False)
        """,
    )
    await _upgrade_from(rebuild, store_url)
    assert await migrate.current(store_url) == "0099"
    assert await _count(store_url, tables.users) == 1
    assert await _count(store_url, tables.credentials) == 1


# ---- engines and rows -------------------------------------------------------------------------


async def _insert_user(url: str, user_id: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                tables.users.insert().values(
                    id=user_id,
                    email=f"{user_id}@example.com",
                    role="player",
                    status="active",
                    created_at_ns=1,
                )
            )
    finally:
        await engine.dispose()


async def _count(url: str, table: sa.Table) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
    finally:
        await engine.dispose()


async def test_rows_round_trip_through_create_engine(store_url: str) -> None:
    await migrate.upgrade(store_url)
    data = bytes(range(256)) * 40
    big = 2**62 + 12345  # int64 values survive on both backends
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                tables.users.insert().values(
                    id="00000000-0000-0000-0000-000000000001",
                    email="alice@example.com",
                    role="player",
                    status="active",
                    created_at_ns=big,
                )
            )
            for seq in (10, 20):
                await connection.execute(
                    tables.engine_snapshots.insert().values(
                        seq=seq,
                        position=str(seq),
                        state_hash=hashlib.sha256(data).hexdigest(),
                        ts_ns=big + seq,
                        size_bytes=len(data),
                        data=data,
                    )
                )
        async with engine.connect() as connection:
            user = (await connection.execute(sa.select(tables.users))).one()
            snapshots = (
                await connection.execute(
                    sa.select(tables.engine_snapshots).order_by(tables.engine_snapshots.c.id)
                )
            ).all()
    finally:
        await engine.dispose()

    assert user._asdict() == {
        "id": "00000000-0000-0000-0000-000000000001",
        "email": "alice@example.com",
        "role": "player",
        "status": "active",
        "created_at_ns": big,
        "token_version": 0,
    }
    assert [s.seq for s in snapshots] == [10, 20]
    assert snapshots[0].id < snapshots[1].id  # auto-increment ids on both backends
    assert bytes(snapshots[0].data) == data
    assert snapshots[1].ts_ns == big + 20
    assert snapshots[0].state_hash == hashlib.sha256(data).hexdigest()


async def test_foreign_keys_are_enforced_and_cascade(store_url: str) -> None:
    await migrate.upgrade(store_url)
    engine = create_engine(store_url)
    try:
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    tables.credentials.insert().values(user_id="nobody", password_hash="x", updated_at_ns=1)
                )
        async with engine.begin() as connection:
            await connection.execute(
                tables.users.insert().values(id="u-1", role="player", status="active", created_at_ns=1)
            )
            await connection.execute(
                tables.credentials.insert().values(user_id="u-1", password_hash="x", updated_at_ns=1)
            )
            await connection.execute(tables.users.delete().where(tables.users.c.id == "u-1"))
            remaining = await connection.execute(sa.select(sa.func.count()).select_from(tables.credentials))
            assert remaining.scalar_one() == 0
    finally:
        await engine.dispose()


async def test_sqlite_connections_get_the_pragmas(tmp_path: Path) -> None:
    url = database_url(None, tmp_path / "new" / "dir")
    engine = create_engine(url)
    try:
        assert (tmp_path / "new" / "dir").is_dir()  # create_engine made the parent directory
        for _ in range(2):  # a second pooled connection gets them too
            async with engine.connect() as connection:
                pragma = connection.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar_one() == "wal"
                assert (await pragma("PRAGMA foreign_keys")).scalar_one() == 1
                assert (await pragma("PRAGMA synchronous")).scalar_one() == 2  # FULL
                assert (await pragma("PRAGMA busy_timeout")).scalar_one() == 5000
    finally:
        await engine.dispose()
    assert (tmp_path / "new" / "dir" / "store.db").is_file()


async def test_sqlite_migrations_leave_foreign_keys_on_for_later_connections(sqlite_url: str) -> None:
    await migrate.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
            assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_engine_pool_settings(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        assert engine.pool.size() == 10  # type: ignore[attr-defined]
        assert engine.sync_engine.pool._max_overflow == 10  # type: ignore[attr-defined]
        assert engine.sync_engine.pool._pre_ping is True
        async with engine.connect() as connection:
            assert (await connection.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


# ---- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u:p@db:5432/cm", "postgresql+asyncpg://u:p@db:5432/cm"),
        ("postgres://u:p@db/cm", "postgresql+asyncpg://u:p@db/cm"),
        ("POSTGRES://u@db/cm", "postgresql+asyncpg://u@db/cm"),
        ("postgresql+asyncpg://u@db/cm?ssl=require", "postgresql+asyncpg://u@db/cm?ssl=require"),
        ("sqlite:///relative/x.db", "sqlite+aiosqlite:///relative/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("  postgresql://u@db/cm  ", "postgresql+asyncpg://u@db/cm"),
    ],
)
def test_database_url_maps_to_the_async_driver(raw: str, expected: str) -> None:
    assert database_url(raw, Path("/unused")) == expected


@pytest.mark.parametrize("raw", [None, ""])
def test_database_url_defaults_to_store_db_in_the_data_dir(
    raw: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = database_url(raw, Path("data"))
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'data' / 'store.db'}"
    assert url.startswith("sqlite+aiosqlite:////")  # absolute


@pytest.mark.parametrize(
    "raw", ["mysql://u@db/cm", "postgresql+psycopg2://u@db/cm", "redis://127.0.0.1:6379/0", "store.db"]
)
def test_database_url_rejects_other_databases(raw: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        database_url(raw, Path("/unused"))


def test_database_url_error_does_not_leak_the_password() -> None:
    with pytest.raises(ValueError) as info:
        database_url("mysql://user:s3cret@db/cm", Path("/unused"))
    assert "s3cret" not in str(info.value)


def test_is_postgres() -> None:
    assert is_postgres("postgresql+asyncpg://u@db/cm")
    assert is_postgres("postgres://u@db/cm")
    assert not is_postgres("sqlite+aiosqlite:///x.db")
    assert db.is_sqlite("sqlite+aiosqlite:///x.db")


# ---- packaging and CLI ------------------------------------------------------------------------


def test_the_migrations_ship_inside_the_package() -> None:
    root = importlib.resources.files("cashmarkets.store.migrations")
    assert root.joinpath("env.py").is_file()
    assert root.joinpath("script.py.mako").is_file()
    assert root.joinpath("versions", "0001_initial.py").is_file()
    assert Path(str(root)) == migrate.MIGRATIONS_DIR


def test_cli_migrate_on_the_embedded_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["migrate", "--data-dir", str(tmp_path)], env={"CASHMARKETS_DATABASE_URL": ""}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"revision": HEAD}
    assert (tmp_path / "store.db").is_file()
    again = CliRunner().invoke(
        app, ["migrate", "--data-dir", str(tmp_path)], env={"CASHMARKETS_DATABASE_URL": ""}
    )
    assert json.loads(again.stdout) == {"revision": HEAD}


@pytest.mark.postgres
def test_cli_migrate_reads_the_database_url_from_the_environment(pg_url: str, tmp_path: Path) -> None:
    sync_url = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    result = CliRunner().invoke(
        app, ["migrate", "--data-dir", str(tmp_path)], env={"CASHMARKETS_DATABASE_URL": sync_url}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"revision": HEAD}
    assert not (tmp_path / "store.db").exists()


def test_cli_migrate_rejects_an_unsupported_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["migrate", "--data-dir", str(tmp_path), "--database-url", "mysql://x/y"]
    )
    assert result.exit_code == 2
    assert "unsupported database URL" in result.stderr

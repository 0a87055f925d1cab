"""PostgreSQL partitions of a table, for the projection tests."""

from __future__ import annotations

from sqlalchemy import text

from cashmarkets.store.db import create_engine


async def partitions_of(url: str, table: str) -> tuple[list[str], int]:
    """(the partitions of `table`, rows in its default partition)."""
    db = create_engine(url)
    try:
        async with db.connect() as conn:
            names = (
                (
                    await conn.execute(
                        text(
                            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table"
                        ),
                        {"table": table},
                    )
                )
                .scalars()
                .all()
            )
            in_default = (await conn.execute(text(f"SELECT count(*) FROM {table}_default"))).scalar_one()
    finally:
        await db.dispose()
    return list(names), int(in_default)

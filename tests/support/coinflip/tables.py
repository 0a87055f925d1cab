"""The coin flip's read model: one row per flip (created by its own Alembic branch, migrations/)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

metadata = MetaData()

coinflip_flips = Table(
    "coinflip_flips",
    metadata,
    Column("flip_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("owner", String(128), nullable=False, index=True),
    Column("asset", String(16), nullable=False),
    Column("stake", BigInteger, nullable=False),
    Column("call", String(8), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("payout", BigInteger, nullable=False),
)

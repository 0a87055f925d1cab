"""Product chartgame: `chart_chains`, `chart_rounds`, `chart_candles` (partitioned by month on
PostgreSQL), `chart_positions`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chart_chains",
        sa.Column("game", sa.String(length=32), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("commitment", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("committed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("game", "chain_id", name=op.f("pk_chart_chains")),
    )
    op.create_table(
        "chart_rounds",
        sa.Column("game", sa.String(length=32), nullable=False),
        sa.Column("round_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("beacon_round", sa.BigInteger(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("chain_index", sa.BigInteger(), nullable=False),
        sa.Column("candles", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=True),
        sa.Column("beacons", sa.Text(), nullable=True),
        sa.Column("updated_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("game", "round_no", name=op.f("pk_chart_rounds")),
    )
    op.create_index(
        op.f("ix_chart_rounds_game_status_round_no"), "chart_rounds", ["game", "status", "round_no"]
    )
    op.create_table(
        "chart_candles",
        sa.Column("game", sa.String(length=32), nullable=False),
        sa.Column("round_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("open", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("close", sa.BigInteger(), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("game", "round_no", "idx", "ts_ms", name=op.f("pk_chart_candles")),
        postgresql_partition_by="RANGE (ts_ms)",
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TABLE chart_candles_default PARTITION OF chart_candles DEFAULT")
    op.create_table(
        "chart_positions",
        sa.Column("position_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("game", sa.String(length=32), nullable=False),
        sa.Column("round_no", sa.BigInteger(), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("stake", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("entry_price", sa.BigInteger(), nullable=False),
        sa.Column("bust_price", sa.BigInteger(), nullable=False),
        sa.Column("opened_candle", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exit_price", sa.BigInteger(), nullable=False),
        sa.Column("payout", sa.BigInteger(), nullable=False),
        sa.Column("updated_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("position_id", name=op.f("pk_chart_positions")),
    )
    op.create_index(op.f("ix_chart_positions_owner_position_id"), "chart_positions", ["owner", "position_id"])
    op.create_index(
        op.f("ix_chart_positions_game_round_no_payout"), "chart_positions", ["game", "round_no", "payout"]
    )


def downgrade() -> None:
    op.drop_table("chart_positions")
    op.drop_table("chart_candles")
    op.drop_table("chart_rounds")
    op.drop_table("chart_chains")

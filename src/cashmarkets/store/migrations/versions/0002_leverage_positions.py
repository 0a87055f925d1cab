"""Product leverage: `positions` and `position_events`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "positions",
        sa.Column("position_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("margin", sa.BigInteger(), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("notional", sa.BigInteger(), nullable=False),
        sa.Column("entry_price", sa.BigInteger(), nullable=False),
        sa.Column("liquidation_price", sa.BigInteger(), nullable=False),
        sa.Column("take_profit", sa.BigInteger(), nullable=False),
        sa.Column("stop_loss", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("opened_ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("close_reason", sa.String(length=16), nullable=True),
        sa.Column("exit_price", sa.BigInteger(), nullable=True),
        sa.Column("pnl", sa.BigInteger(), nullable=True),
        sa.Column("payout", sa.BigInteger(), nullable=True),
        sa.Column("closed_seq", sa.BigInteger(), nullable=True),
        sa.Column("closed_ts_ns", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("position_id", name=op.f("pk_positions")),
    )
    op.create_index(
        op.f("ix_positions_owner_status_position_id"), "positions", ["owner", "status", "position_id"]
    )
    op.create_table(
        "position_events",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("position_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position_events")),
    )
    op.create_index(op.f("ix_position_events_position_id_seq"), "position_events", ["position_id", "seq"])


def downgrade() -> None:
    op.drop_table("position_events")
    op.drop_table("positions")

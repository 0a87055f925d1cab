"""The coin flip's flips: a branch of its own (`coinflip`), beside the store's revisions.

Revision ID: c0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("coinflip",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coinflip_flips",
        sa.Column("flip_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("stake", sa.BigInteger(), nullable=False),
        sa.Column("call", sa.String(length=8), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("payout", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_coinflip_flips_owner", "coinflip_flips", ["owner"])


def downgrade() -> None:
    op.drop_table("coinflip_flips")

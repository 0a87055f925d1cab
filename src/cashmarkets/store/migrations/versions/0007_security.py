"""Security hardening: token versions, failed sign-in throttle, faucet running totals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "credentials", sa.Column("failed_signins", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("credentials", sa.Column("locked_until_ns", sa.BigInteger(), nullable=True))
    op.create_table(
        "faucet_totals",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "asset", "day", name=op.f("pk_faucet_totals")),
    )


def downgrade() -> None:
    op.drop_table("faucet_totals")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("locked_until_ns")
        batch.drop_column("failed_signins")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")

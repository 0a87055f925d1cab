"""Chart game chain adapter: the on-chain draw of each round, the publishing txn of each chain.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chart_chains", sa.Column("onchain_txn", sa.String(length=80), nullable=True))
    op.add_column("chart_rounds", sa.Column("onchain", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chart_rounds") as batch:
        batch.drop_column("onchain")
    with op.batch_alter_table("chart_chains") as batch:
        batch.drop_column("onchain_txn")

"""Product spot: `spot_orders`, `spot_trades`, `spot_candles` (partitioned by month on PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spot_orders",
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("market", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("client_order_id", sa.String(length=36), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("order_type", sa.String(length=16), nullable=False),
        sa.Column("tif", sa.String(length=3), nullable=False),
        sa.Column("stp", sa.String(length=16), nullable=False),
        sa.Column("price_ticks", sa.BigInteger(), nullable=False),
        sa.Column("qty_lots", sa.BigInteger(), nullable=False),
        sa.Column("quote_qty", sa.BigInteger(), nullable=False),
        sa.Column("executed_lots", sa.BigInteger(), nullable=False),
        sa.Column("executed_quote", sa.BigInteger(), nullable=False),
        sa.Column("remaining_lots", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_spot_orders")),
    )
    op.create_index(
        op.f("ix_spot_orders_owner_market_order_id"), "spot_orders", ["owner", "market", "order_id"]
    )
    op.create_index(op.f("ix_spot_orders_owner_client_order_id"), "spot_orders", ["owner", "client_order_id"])
    op.create_index(
        op.f("ix_spot_orders_market_side_remaining_lots_price_ticks"),
        "spot_orders",
        ["market", "side", "remaining_lots", "price_ticks"],
    )
    op.create_table(
        "spot_trades",
        sa.Column("market", sa.String(length=16), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("price_ticks", sa.BigInteger(), nullable=False),
        sa.Column("qty_lots", sa.BigInteger(), nullable=False),
        sa.Column("quote_amount", sa.BigInteger(), nullable=False),
        sa.Column("taker_side", sa.String(length=4), nullable=False),
        sa.Column("taker_order_id", sa.BigInteger(), nullable=False),
        sa.Column("taker_owner", sa.String(length=128), nullable=False),
        sa.Column("maker_order_id", sa.BigInteger(), nullable=False),
        sa.Column("maker_owner", sa.String(length=128), nullable=False),
        sa.Column("buyer_fee", sa.BigInteger(), nullable=False),
        sa.Column("seller_fee", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("market", "trade_id", name=op.f("pk_spot_trades")),
    )
    op.create_index(
        op.f("ix_spot_trades_taker_owner_market_trade_id"),
        "spot_trades",
        ["taker_owner", "market", "trade_id"],
    )
    op.create_index(
        op.f("ix_spot_trades_maker_owner_market_trade_id"),
        "spot_trades",
        ["maker_owner", "market", "trade_id"],
    )
    op.create_index(op.f("ix_spot_trades_market_ts_ns"), "spot_trades", ["market", "ts_ns"])
    op.create_table(
        "spot_candles",
        sa.Column("market", sa.String(length=16), nullable=False),
        sa.Column("interval", sa.String(length=4), nullable=False),
        sa.Column("open_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("open_ticks", sa.BigInteger(), nullable=False),
        sa.Column("high_ticks", sa.BigInteger(), nullable=False),
        sa.Column("low_ticks", sa.BigInteger(), nullable=False),
        sa.Column("close_ticks", sa.BigInteger(), nullable=False),
        sa.Column("volume_lots", sa.BigInteger(), nullable=False),
        sa.Column("quote_volume", sa.BigInteger(), nullable=False),
        sa.Column("trades", sa.BigInteger(), nullable=False),
        sa.Column("first_trade_id", sa.BigInteger(), nullable=False),
        sa.Column("last_trade_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("market", "interval", "open_time_ms", name=op.f("pk_spot_candles")),
        postgresql_partition_by="RANGE (open_time_ms)",
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TABLE spot_candles_default PARTITION OF spot_candles DEFAULT")


def downgrade() -> None:
    op.drop_table("spot_candles")
    op.drop_table("spot_trades")
    op.drop_table("spot_orders")

"""The platform's SQL schema (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

    platform data (written by the API):   users, credentials, wallet_identities, login_nonces,
                                          magic_links, refresh_tokens, idempotency_keys, audit_log,
                                          api_keys, faucet_totals
    projections (written by the projector from engine events, exactly once):
                                          accounts, ledger_transfers, withdrawals,
                                          positions, position_events, projector_checkpoints,
                                          spot_orders, spot_trades, spot_candles,
                                          chart_chains, chart_rounds, chart_candles, chart_positions
    engine:                               engine_snapshots
    singleton roles:                      leases

Times are integer nanoseconds since the epoch (`*_ns`), amounts integer minor units, like the
engine. Alembic migrations in `store/migrations` must produce exactly this schema (a test
compares them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints, so migrations can refer to them on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

USER_ID_LENGTH = 36
EMAIL_LENGTH_MAX = 320
ADDRESS_LENGTH_MAX = 128
OWNER_LENGTH_MAX = 128

users = Table(
    "users",
    metadata,
    Column("id", String(USER_ID_LENGTH), primary_key=True),
    Column("email", String(EMAIL_LENGTH_MAX), nullable=True, unique=True),
    Column("role", String(16), nullable=False),  # player | operator | admin | auditor
    Column("status", String(16), nullable=False),  # active | disabled
    Column("created_at_ns", BigInteger, nullable=False),
    # Bumped on every change that must reach tokens already issued (role, status): an access
    # token carries the version it was issued at and is refused once the user's moved on.
    Column("token_version", Integer, nullable=False, server_default="0"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("user_id", String(USER_ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("updated_at_ns", BigInteger, nullable=False),
    # Failed password sign-ins in a row, and until when the account refuses more (a growing delay).
    Column("failed_signins", Integer, nullable=False, server_default="0"),
    Column("locked_until_ns", BigInteger, nullable=True),
)

wallet_identities = Table(
    "wallet_identities",
    metadata,
    Column("chain", String(16), primary_key=True),  # ethereum | solana | aptos
    Column("address", String(ADDRESS_LENGTH_MAX), primary_key=True),
    Column("user_id", String(USER_ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at_ns", BigInteger, nullable=False),
    Index(None, "user_id"),
)

login_nonces = Table(
    "login_nonces",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("chain", String(16), nullable=False),
    Column("address", String(ADDRESS_LENGTH_MAX), nullable=False),
    Column("expires_at_ns", BigInteger, nullable=False),
    Column("used_at_ns", BigInteger, nullable=True),
)

magic_links = Table(
    "magic_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the emailed token
    Column("email", String(EMAIL_LENGTH_MAX), nullable=False),
    Column("expires_at_ns", BigInteger, nullable=False),
    Column("used_at_ns", BigInteger, nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex; the token itself is never stored
    Column("user_id", String(USER_ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # Rotation: each refresh replaces the token; a replaced token used again revokes its family.
    Column("family_id", String(36), nullable=False),
    Column("created_at_ns", BigInteger, nullable=False),
    Column("expires_at_ns", BigInteger, nullable=False),
    Column("revoked_at_ns", BigInteger, nullable=True),
    Column("replaced_by", String(64), nullable=True),
    Index(None, "user_id"),
    Index(None, "family_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(160), primary_key=True),  # "user:<id>" or "ip:<address>"
    Column("key", String(128), primary_key=True),
    Column("request_hash", String(64), nullable=False),  # sha256 of method, path and body
    Column("status_code", Integer, nullable=True),  # NULL while the first request is in flight
    Column("content_type", String(64), nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at_ns", BigInteger, nullable=False),
    # While in flight: which request holds the claim ("<process id>:<n>") and until when; the
    # holding process renews it while the request runs, so a dead process frees it in seconds.
    Column("claimant", String(64), nullable=True),
    Column("lease_until_ns", BigInteger, nullable=True),
    Index(None, "created_at_ns"),
)

# Development money handed out per user, asset and UTC day (the faucet's running totals).
faucet_totals = Table(
    "faucet_totals",
    metadata,
    Column("user_id", String(USER_ID_LENGTH), primary_key=True),
    Column("asset", String(16), primary_key=True),
    Column("day", Integer, primary_key=True),  # days since the epoch (UTC)
    Column("amount_minor", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("ts_ns", BigInteger, nullable=False),
    Column("actor", String(160), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(160), nullable=False),
    Column("detail", Text, nullable=False),  # JSON text
    Column("request_id", String(64), nullable=True),
    Index(None, "ts_ns"),
)

# API keys for the Binance-compatible routes. The secret must be readable to check HMAC
# signatures, so it is stored sealed (NaCl secretbox under the deployment's key), never in clear.
api_keys = Table(
    "api_keys",
    metadata,
    Column("api_key", String(64), primary_key=True),
    Column("user_id", String(USER_ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(64), nullable=False),
    Column("sealed_secret", LargeBinary, nullable=False),
    Column("created_at_ns", BigInteger, nullable=False),
    Column("revoked_at_ns", BigInteger, nullable=True),
    Index(None, "user_id"),
)

# ---- projections ------------------------------------------------------------------------------

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(OWNER_LENGTH_MAX), nullable=False),
    Column("asset", String(16), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("updated_seq", BigInteger, nullable=False),
    UniqueConstraint("owner", "asset"),
)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("transfer_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # 0 single, 1 pending, 2 post, 3 void
    Column("debit_account_id", BigInteger, nullable=False),
    Column("credit_account_id", BigInteger, nullable=False),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("code", String(32), nullable=False),
    Column("pending_id", BigInteger, nullable=False),
    # A user's history is the transfers on either side of their accounts, newest first.
    Index(None, "debit_account_id", "transfer_id"),
    Index(None, "credit_account_id", "transfer_id"),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("hold_id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(OWNER_LENGTH_MAX), nullable=False),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("destination", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # pending | completed | rejected
    Column("reference", String(256), nullable=False),  # chain tx id, or the rejection reason
    Column("requested_seq", BigInteger, nullable=False),
    Column("requested_ts_ns", BigInteger, nullable=False),
    Column("resolved_ts_ns", BigInteger, nullable=True),
    Index(None, "owner", "hold_id"),
    Index(None, "status", "hold_id"),
)

# Product leverage: every position (open, then closed in place) and every position event.
positions = Table(
    "positions",
    metadata,
    Column("position_id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(OWNER_LENGTH_MAX), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(8), nullable=False),  # long | short
    Column("margin", BigInteger, nullable=False),  # USDC minor units
    Column("leverage", Integer, nullable=False),
    Column("notional", BigInteger, nullable=False),
    Column("entry_price", BigInteger, nullable=False),  # the market's price units
    Column("liquidation_price", BigInteger, nullable=False),
    Column("take_profit", BigInteger, nullable=False),  # 0: none
    Column("stop_loss", BigInteger, nullable=False),  # 0: none
    Column("status", String(8), nullable=False),  # open | closed
    Column("opened_seq", BigInteger, nullable=False),
    Column("opened_ts_ns", BigInteger, nullable=False),
    Column("close_reason", String(16), nullable=True),  # user | take_profit | stop_loss | liquidation
    Column("exit_price", BigInteger, nullable=True),
    Column("pnl", BigInteger, nullable=True),  # realized: payout - margin
    Column("payout", BigInteger, nullable=True),
    Column("closed_seq", BigInteger, nullable=True),
    Column("closed_ts_ns", BigInteger, nullable=True),
    Index(None, "owner", "status", "position_id"),
)

position_events = Table(
    "position_events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("position_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),  # opened | closed
    Column("reason", String(16), nullable=True),
    Column("price", BigInteger, nullable=False),
    Index(None, "position_id", "seq"),
)

spot_orders = Table(
    "spot_orders",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("market", String(16), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("client_order_id", String(36), nullable=False),  # "" when none
    Column("side", String(4), nullable=False),  # BUY | SELL
    Column("order_type", String(16), nullable=False),  # LIMIT | MARKET | LIMIT_MAKER
    Column("tif", String(3), nullable=False),
    Column("stp", String(16), nullable=False),
    Column("price_ticks", BigInteger, nullable=False),
    Column("qty_lots", BigInteger, nullable=False),
    Column("quote_qty", BigInteger, nullable=False),
    Column("executed_lots", BigInteger, nullable=False),
    Column("executed_quote", BigInteger, nullable=False),
    Column("remaining_lots", BigInteger, nullable=False),  # open quantity; 0 once closed
    Column("status", String(20), nullable=False),
    Column("created_seq", BigInteger, nullable=False),
    Column("created_ts_ns", BigInteger, nullable=False),
    Column("updated_seq", BigInteger, nullable=False),
    Column("updated_ts_ns", BigInteger, nullable=False),
    Index(None, "owner", "market", "order_id"),
    Index(None, "owner", "client_order_id"),
    # Depth from the store (distributed API processes): open orders by price.
    Index(None, "market", "side", "remaining_lots", "price_ticks"),
)

spot_trades = Table(
    "spot_trades",
    metadata,
    Column("market", String(16), primary_key=True),
    Column("trade_id", BigInteger, primary_key=True, autoincrement=False),  # sequential per market
    Column("seq", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("price_ticks", BigInteger, nullable=False),
    Column("qty_lots", BigInteger, nullable=False),
    Column("quote_amount", BigInteger, nullable=False),
    Column("taker_side", String(4), nullable=False),
    Column("taker_order_id", BigInteger, nullable=False),
    Column("taker_owner", String(128), nullable=False),
    Column("maker_order_id", BigInteger, nullable=False),
    Column("maker_owner", String(128), nullable=False),
    Column("buyer_fee", BigInteger, nullable=False),  # base minor units
    Column("seller_fee", BigInteger, nullable=False),  # quote minor units
    Index(None, "taker_owner", "market", "trade_id"),
    Index(None, "maker_owner", "market", "trade_id"),
    Index(None, "market", "ts_ns"),
)

# On PostgreSQL partitioned by month of open_time_ms (the projector creates each month's
# partition before writing to it; `spot_candles_default` catches nothing in practice). The
# partitions are not part of this schema: `CANDLE_PARTITION_PREFIX` names them.
CANDLE_PARTITION_PREFIX = "spot_candles_"
CHART_CANDLE_PARTITION_PREFIX = "chart_candles_"
spot_candles = Table(
    "spot_candles",
    metadata,
    Column("market", String(16), primary_key=True),
    Column("interval", String(4), primary_key=True),  # 1m 5m 15m 1h 4h 1d
    Column("open_time_ms", BigInteger, primary_key=True),
    Column("open_ticks", BigInteger, nullable=False),
    Column("high_ticks", BigInteger, nullable=False),
    Column("low_ticks", BigInteger, nullable=False),
    Column("close_ticks", BigInteger, nullable=False),
    Column("volume_lots", BigInteger, nullable=False),
    Column("quote_volume", BigInteger, nullable=False),
    Column("trades", BigInteger, nullable=False),
    Column("first_trade_id", BigInteger, nullable=False),
    Column("last_trade_id", BigInteger, nullable=False),
    postgresql_partition_by="RANGE (open_time_ms)",
)

chart_chains = Table(
    "chart_chains",
    metadata,
    Column("game", String(32), primary_key=True),
    Column("chain_id", BigInteger, primary_key=True, autoincrement=False),
    Column("commitment", String(64), nullable=False),  # hex
    Column("length", BigInteger, nullable=False),
    Column("committed_seq", BigInteger, nullable=False),
    Column("onchain_txn", String(80), nullable=True),  # with a chain adapter: the publishing txn
)

chart_rounds = Table(
    "chart_rounds",
    metadata,
    Column("game", String(32), primary_key=True),
    Column("round_no", BigInteger, primary_key=True, autoincrement=False),
    Column("status", String(16), nullable=False),  # announced | open | settled
    Column("start_ms", BigInteger, nullable=False),
    Column("beacon_round", BigInteger, nullable=False),
    Column("chain_id", BigInteger, nullable=False),
    Column("chain_index", BigInteger, nullable=False),
    Column("candles", BigInteger, nullable=False),
    Column("seed", String(64), nullable=True),  # hex, revealed at settlement
    Column("beacons", Text, nullable=True),  # JSON [[beacon round, from candle, signature hex], ...]
    Column("onchain", Text, nullable=True),  # JSON OnchainDraw, with a chain adapter
    Column("updated_seq", BigInteger, nullable=False),
    Index(None, "game", "status", "round_no"),
)

# Partitioned by month of ts_ms on PostgreSQL, like spot_candles (the key includes ts_ms for that).
chart_candles = Table(
    "chart_candles",
    metadata,
    Column("game", String(32), primary_key=True),
    Column("round_no", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("ts_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("open", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    Column("low", BigInteger, nullable=False),
    Column("close", BigInteger, nullable=False),
    Column("volume", BigInteger, nullable=False),
    postgresql_partition_by="RANGE (ts_ms)",
)

chart_positions = Table(
    "chart_positions",
    metadata,
    Column("position_id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(128), nullable=False),
    Column("game", String(32), nullable=False),
    Column("round_no", BigInteger, nullable=False),
    Column("side", String(8), nullable=False),
    Column("stake", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("leverage", Integer, nullable=False),
    Column("entry_price", BigInteger, nullable=False),
    Column("bust_price", BigInteger, nullable=False),
    Column("opened_candle", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # open | closed | busted | settled
    Column("exit_price", BigInteger, nullable=False),
    Column("payout", BigInteger, nullable=False),
    Column("updated_seq", BigInteger, nullable=False),
    Index(None, "owner", "position_id"),
    Index(None, "game", "round_no", "payout"),
)

projector_checkpoints = Table(
    "projector_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("position", String(64), nullable=True),
    Column("updated_at_ns", BigInteger, nullable=False),
    # The lease token of the projector that wrote this checkpoint: a batch carrying a lower one is
    # refused in its own transaction (docs/decisions/018).
    Column("fence", BigInteger, nullable=False, server_default="0"),
)

# ---- engine -------------------------------------------------------------------------------------

engine_snapshots = Table(
    "engine_snapshots",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("position", String(64), nullable=False),
    Column("state_hash", String(64), nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index(None, "seq"),
)

# ---- singleton roles ----------------------------------------------------------------------------

# One row per "one per deployment" role (projector, chartgame, ...): who holds it, until when
# (milliseconds on the database server's clock) and the fencing token, which only grows
# (store/leases.py, docs/decisions/018).
leases = Table(
    "leases",
    metadata,
    Column("role", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("acquired_at_ms", BigInteger, nullable=False),
)

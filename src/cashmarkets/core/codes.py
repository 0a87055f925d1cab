"""Rejection codes: the one list of every expected failure the engine can answer with.

Codes are stable snake_case strings: clients and stored results depend on them, so a code is
never renamed or reused. Group by stage, as exchange-core does:

    engine   unknown_command, duplicate_command_id, internal_error, bad_command, stale_fence
    ledger   amount_must_be_positive ... overflow
    leverage unknown_symbol ... position_not_found
"""

from __future__ import annotations

from typing import Final

# Engine stage.
UNKNOWN_COMMAND: Final = "unknown_command"
BAD_COMMAND: Final = "bad_command"
INTERNAL_ERROR: Final = "internal_error"
STALE_FENCE: Final = "stale_fence"
RULES_REFUSED: Final = "rules_refused"

# Ledger stage, in order of precedence: a transfer failing several checks gets the first.
AMOUNT_MUST_BE_POSITIVE: Final = "amount_must_be_positive"
UNKNOWN_ASSET: Final = "unknown_asset"
UNKNOWN_TRANSFER_CODE: Final = "unknown_transfer_code"
BAD_OWNER: Final = "bad_owner"
ACCOUNTS_MUST_BE_DIFFERENT: Final = "accounts_must_be_different"
ACCOUNT_NOT_FOUND: Final = "account_not_found"
DEBIT_ACCOUNT_NOT_FOUND: Final = "debit_account_not_found"
CREDIT_ACCOUNT_NOT_FOUND: Final = "credit_account_not_found"
ASSETS_MUST_MATCH: Final = "assets_must_match"
INSUFFICIENT_FUNDS: Final = "insufficient_funds"
EXCEEDS_DEBITS: Final = "exceeds_debits"
PENDING_TRANSFER_NOT_FOUND: Final = "pending_transfer_not_found"
ALREADY_POSTED: Final = "already_posted"
ALREADY_VOIDED: Final = "already_voided"
EXCEEDS_PENDING_AMOUNT: Final = "exceeds_pending_amount"
LINKED_EVENT_FAILED: Final = "linked_event_failed"
TOO_MANY_TRANSFERS: Final = "too_many_transfers"
ACCOUNTS_MAX_REACHED: Final = "accounts_max_reached"
OVERFLOW: Final = "overflow"
WITHDRAWAL_NOT_FOUND: Final = "withdrawal_not_found"
BAD_DESTINATION: Final = "bad_destination"

# Leverage stage.
UNKNOWN_SYMBOL: Final = "unknown_symbol"
BAD_PRICE: Final = "bad_price"
STALE_UPDATE: Final = "stale_update"
BAD_SIDE: Final = "bad_side"
BAD_LEVERAGE: Final = "bad_leverage"
BAD_MARGIN: Final = "bad_margin"
BAD_SLIPPAGE: Final = "bad_slippage"
NO_PRICE: Final = "no_price"
STALE_PRICE: Final = "stale_price"
SLIPPAGE_EXCEEDED: Final = "slippage_exceeded"
BAD_TAKE_PROFIT: Final = "bad_take_profit"
BAD_STOP_LOSS: Final = "bad_stop_loss"
TOO_MANY_POSITIONS: Final = "too_many_positions"
POSITION_NOT_FOUND: Final = "position_not_found"

# Spot stage.
UNKNOWN_MARKET: Final = "unknown_market"
MARKET_HALTED: Final = "market_halted"
BAD_ORDER_TYPE: Final = "bad_order_type"
BAD_TIME_IN_FORCE: Final = "bad_time_in_force"
BAD_STP_MODE: Final = "bad_stp_mode"
BAD_CLIENT_ORDER_ID: Final = "bad_client_order_id"
DUPLICATE_CLIENT_ORDER_ID: Final = "duplicate_client_order_id"
BAD_QUANTITY: Final = "bad_quantity"
BELOW_MIN_NOTIONAL: Final = "below_min_notional"
WOULD_TAKE: Final = "would_take"
TOO_MANY_ORDERS: Final = "too_many_orders"
ORDER_NOT_FOUND: Final = "order_not_found"
BAD_MARKET_STATUS: Final = "bad_market_status"

# Chart game stage.
UNKNOWN_GAME: Final = "unknown_game"
NO_SEED_CHAIN: Final = "no_seed_chain"
ROUND_IN_PROGRESS: Final = "round_in_progress"
BAD_ROUND: Final = "bad_round"
BAD_SEED: Final = "bad_seed"
ROUND_NOT_OPEN: Final = "round_not_open"
BAD_STAKE: Final = "bad_stake"

DESCRIPTIONS: Final[dict[str, str]] = {
    UNKNOWN_COMMAND: "No handler is registered for this command type.",
    BAD_COMMAND: "The command is malformed (a field out of its allowed range).",
    INTERNAL_ERROR: "A bug: the handler raised. Nothing was changed; the error is counted and logged.",
    RULES_REFUSED: "A product's rules cannot change here: it is in use and the configuration differs "
    "from the one in force (docs/decisions/023).",
    STALE_FENCE: "A singleton's command carries a lease token older than one the engine has seen for "
    "its role: a newer holder has taken over (docs/decisions/018).",
    AMOUNT_MUST_BE_POSITIVE: "Amounts are positive integers in minor units.",
    UNKNOWN_ASSET: "The asset code is not one the engine knows.",
    UNKNOWN_TRANSFER_CODE: "The transfer code is not one the ledger knows.",
    BAD_OWNER: "Owner names are 1..128 characters; names starting with '@' are system accounts.",
    ACCOUNTS_MUST_BE_DIFFERENT: "A transfer must move money between two different accounts.",
    ACCOUNT_NOT_FOUND: "No account exists for this owner and asset.",
    DEBIT_ACCOUNT_NOT_FOUND: "The account to debit does not exist.",
    CREDIT_ACCOUNT_NOT_FOUND: "The account to credit does not exist.",
    ASSETS_MUST_MATCH: "Both accounts of a transfer must hold the same asset.",
    INSUFFICIENT_FUNDS: "The debit would exceed the account's available balance (no overdraft).",
    EXCEEDS_DEBITS: "The credit would exceed the account's debits (credit-limited account).",
    PENDING_TRANSFER_NOT_FOUND: "No hold exists with this id.",
    ALREADY_POSTED: "The hold was already posted; a hold resolves at most once.",
    ALREADY_VOIDED: "The hold was already voided; a hold resolves at most once.",
    EXCEEDS_PENDING_AMOUNT: "A partial post may not exceed the held amount.",
    LINKED_EVENT_FAILED: "Another transfer of the same linked batch failed; none was applied.",
    TOO_MANY_TRANSFERS: "A linked batch holds at most TRANSFERS_PER_BATCH_MAX transfers.",
    ACCOUNTS_MAX_REACHED: "The engine holds at most ACCOUNTS_MAX accounts.",
    OVERFLOW: "An account's running total would pass TOTAL_MAX (2**63 - 1 minor units).",
    WITHDRAWAL_NOT_FOUND: "No pending withdrawal has this id.",
    BAD_DESTINATION: "A withdrawal destination is 1..256 printable characters.",
    UNKNOWN_SYMBOL: "No market with this symbol.",
    BAD_PRICE: "Prices are positive integers in the market's price units "
    "(leverage: bid <= ask; spot: up to the market's max_price_ticks).",
    STALE_UPDATE: "A price update older than the one the engine has (by exchange update id).",
    BAD_SIDE: "A position is long or short; an order is BUY or SELL.",
    BAD_LEVERAGE: "Leverage is an integer from 1 to the market's maximum.",
    BAD_MARGIN: "Margin is a positive amount up to LeverageConfig.margin_max.",
    BAD_SLIPPAGE: "Slippage is 0..LeverageConfig.slippage_bps_max basis points.",
    NO_PRICE: "No price has arrived for this market yet.",
    STALE_PRICE: "The market's last price is older than LeverageConfig.stale_after_ns.",
    SLIPPAGE_EXCEEDED: "The fill price is worse than the expected price by more than the slippage.",
    BAD_TAKE_PROFIT: "A take-profit must be beyond the fill price (above for long, below for short).",
    BAD_STOP_LOSS: "A stop-loss must be on the losing side of the fill price.",
    TOO_MANY_POSITIONS: "Open positions are limited per owner and per engine.",
    POSITION_NOT_FOUND: "No open position with this id belongs to the caller.",
    UNKNOWN_MARKET: "No spot market with this symbol.",
    MARKET_HALTED: "The market is halted: orders may be canceled, not placed or amended.",
    BAD_ORDER_TYPE: "An order is LIMIT, MARKET or LIMIT_MAKER.",
    BAD_TIME_IN_FORCE: "A LIMIT order's timeInForce is GTC, IOC or FOK.",
    BAD_STP_MODE: "Self-trade prevention is EXPIRE_TAKER, EXPIRE_MAKER or EXPIRE_BOTH.",
    BAD_CLIENT_ORDER_ID: "A client order id is 1..36 characters of A-Z a-z 0-9 . : / _ -",
    DUPLICATE_CLIENT_ORDER_ID: "The caller already has an open order with this client order id.",
    BAD_QUANTITY: "Quantity outside the market's min..max lots (amend: not above the filled part), "
    "or a MARKET order with both or neither of quantity and quote amount.",
    BELOW_MIN_NOTIONAL: "price x quantity (or a quote amount) is below the market's min notional.",
    WOULD_TAKE: "A LIMIT_MAKER (post-only) order would match at once; nothing was placed.",
    TOO_MANY_ORDERS: "Open orders are limited per owner and market and per engine.",
    ORDER_NOT_FOUND: "No open order with this id belongs to the caller in this market.",
    BAD_MARKET_STATUS: "A market status is TRADING or HALTED.",
    UNKNOWN_GAME: "No chart game with this id.",
    NO_SEED_CHAIN: "The game has no committed seed chain with seeds left.",
    ROUND_IN_PROGRESS: "A round of this game is announced or open.",
    BAD_ROUND: "Not the round the game expects (rounds are numbered 1, 2, 3, ...).",
    BAD_SEED: "The seed does not hash to the chain's last revealed link (or its commitment).",
    ROUND_NOT_OPEN: "The game has no open round (or it is ending).",
    BAD_STAKE: "A stake is between the game's minimum and maximum.",
}

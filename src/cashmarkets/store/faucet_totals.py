"""The development faucet's running totals: minor units handed out per user, asset and UTC day.

`reserve` adds an amount with one conditional upsert that only succeeds while the day's total
stays within the maximum, so concurrent requests (in any API process) cannot together exceed it
(PostgreSQL locks the row for the update and re-checks the condition on the latest version;
SQLite writes one at a time). `refund` takes an amount back (the engine refused the deposit).
"""

from __future__ import annotations

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.core.money import ASSETS, AmountError
from cashmarkets.store.tables import faucet_totals

NS_PER_DAY = 86_400 * 1_000_000_000
DAY_MAX_MINOR = 2**62 - 1


def parse_daily_max(text: str) -> dict[str, int]:
    """`"USDC=10000,BTC=1"` -> {asset: minor units}; an asset not named gets nothing from the
    faucet. ValueError on anything else (an unknown asset, a bad amount, a repeat)."""
    limits: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        code, sep, amount = (piece.strip() for piece in item.partition("="))
        asset = ASSETS.get(code)
        if not sep or asset is None or code in limits:
            raise ValueError(f"{item!r}: expected ASSET=AMOUNT, each asset once, assets {sorted(ASSETS)}")
        try:
            limits[code] = asset.parse(amount)
        except AmountError as exc:
            raise ValueError(f"{item!r}: {exc.detail}") from None
        if limits[code] > DAY_MAX_MINOR:  # a total plus a request must fit in a BIGINT
            raise ValueError(f"{item!r}: at most {DAY_MAX_MINOR} minor units")
    return limits


def utc_day(now_ns: int) -> int:
    """Days since the epoch, UTC."""
    return now_ns // NS_PER_DAY


class FaucetTotals:
    """`daily_max`: minor units per asset, per user and UTC day (`parse_daily_max`)."""

    def __init__(self, engine: AsyncEngine, daily_max: dict[str, int]) -> None:
        self.engine = engine
        self.daily_max = daily_max
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def reserve(self, user_id: str, asset: str, day: int, amount: int, day_max: int) -> bool:
        """Add `amount` to the day's total if the total stays <= `day_max`; False (and nothing
        added) otherwise."""
        if amount > day_max:
            return False
        insert = self._insert(faucet_totals).values(
            user_id=user_id, asset=asset, day=day, amount_minor=amount
        )
        total = faucet_totals.c.amount_minor + insert.excluded.amount_minor
        upsert = insert.on_conflict_do_update(
            index_elements=[faucet_totals.c.user_id, faucet_totals.c.asset, faucet_totals.c.day],
            set_={"amount_minor": total},
            where=total <= day_max,
        )
        async with self.engine.begin() as conn:
            done = await conn.execute(upsert)
        return done.rowcount == 1

    async def refund(self, user_id: str, asset: str, day: int, amount: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(faucet_totals)
                .where(
                    and_(
                        faucet_totals.c.user_id == user_id,
                        faucet_totals.c.asset == asset,
                        faucet_totals.c.day == day,
                    )
                )
                .values(amount_minor=faucet_totals.c.amount_minor - amount)
            )

    async def total(self, user_id: str, asset: str, day: int) -> int:
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    select(faucet_totals.c.amount_minor).where(
                        and_(
                            faucet_totals.c.user_id == user_id,
                            faucet_totals.c.asset == asset,
                            faucet_totals.c.day == day,
                        )
                    )
                )
            ).scalar()
        return int(found or 0)

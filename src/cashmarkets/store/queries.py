"""Reads from the projections: ledger history and withdrawals, cursor-paginated, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.core.ledger import Account
from cashmarkets.core.products.leverage import PositionView
from cashmarkets.store.tables import accounts, ledger_transfers, positions, withdrawals

PAGE_LIMIT_MAX = 200


async def accounts_of(db: AsyncEngine, owner: str) -> list[Account]:
    query = select(accounts).where(accounts.c.owner == owner).order_by(accounts.c.asset)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Account(
            r.account_id,
            r.owner,
            r.asset,
            r.flags,
            r.debits_posted,
            r.credits_posted,
            r.debits_pending,
            r.credits_pending,
        )
        for r in rows
    ]


async def ledger_page(
    db: AsyncEngine,
    owner: str,
    *,
    asset: str | None,
    code: str | None,
    from_ns: int | None,
    to_ns: int | None,
    before_id: int | None,
    limit: int,
) -> tuple[list[tuple[Any, int]], int | None]:
    """Transfers touching `owner`'s accounts as (row, my_account_id), and the next cursor."""
    mine = {a.account_id: a.asset for a in await _account_ids(db, owner)}
    if not mine:
        return [], None
    ids = list(mine)
    conditions = [
        or_(ledger_transfers.c.debit_account_id.in_(ids), ledger_transfers.c.credit_account_id.in_(ids))
    ]
    if asset is not None:
        conditions.append(ledger_transfers.c.asset == asset)
    if code is not None:
        conditions.append(ledger_transfers.c.code == code)
    if from_ns is not None:
        conditions.append(ledger_transfers.c.ts_ns >= from_ns)
    if to_ns is not None:
        conditions.append(ledger_transfers.c.ts_ns < to_ns)
    if before_id is not None:
        conditions.append(ledger_transfers.c.transfer_id < before_id)
    query = (
        select(ledger_transfers)
        .where(and_(*conditions))
        .order_by(ledger_transfers.c.transfer_id.desc())
        .limit(limit + 1)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [(r, r.debit_account_id if r.debit_account_id in mine else r.credit_account_id) for r in rows]
    return out, (rows[-1].transfer_id if more and rows else None)


async def _account_ids(db: AsyncEngine, owner: str) -> list[Any]:
    async with db.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(accounts.c.account_id, accounts.c.asset).where(accounts.c.owner == owner)
                )
            ).all()
        )


async def withdrawals_page(
    db: AsyncEngine, *, owner: str | None, status: str | None, before_id: int | None, limit: int
) -> tuple[list[Any], int | None]:
    conditions = []
    if owner is not None:
        conditions.append(withdrawals.c.owner == owner)
    if status is not None:
        conditions.append(withdrawals.c.status == status)
    if before_id is not None:
        conditions.append(withdrawals.c.hold_id < before_id)
    query = (
        select(withdrawals)
        .where(and_(True, *conditions))
        .order_by(withdrawals.c.hold_id.desc())
        .limit(limit + 1)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].hold_id if more and rows else None)


async def withdrawal(db: AsyncEngine, hold_id: int) -> Any | None:
    async with db.connect() as conn:
        return (await conn.execute(select(withdrawals).where(withdrawals.c.hold_id == hold_id))).first()


def position_view(r: Any) -> PositionView:
    return PositionView(
        position_id=r.position_id,
        owner=r.owner,
        symbol=r.symbol,
        side=r.side,
        margin=r.margin,
        leverage=r.leverage,
        notional=r.notional,
        entry_price=r.entry_price,
        liquidation_price=r.liquidation_price,
        take_profit=r.take_profit,
        stop_loss=r.stop_loss,
        opened_seq=r.opened_seq,
        opened_ts_ns=r.opened_ts_ns,
    )


async def open_positions(db: AsyncEngine, owner: str) -> list[PositionView]:
    query = (
        select(positions)
        .where(and_(positions.c.owner == owner, positions.c.status == "open"))
        .order_by(positions.c.position_id)
    )
    async with db.connect() as conn:
        return [position_view(r) for r in (await conn.execute(query)).all()]


async def closed_positions_page(
    db: AsyncEngine, owner: str, *, before_id: int | None, limit: int
) -> tuple[list[Any], int | None]:
    conditions = [positions.c.owner == owner, positions.c.status == "closed"]
    if before_id is not None:
        conditions.append(positions.c.position_id < before_id)
    query = (
        select(positions).where(and_(*conditions)).order_by(positions.c.position_id.desc()).limit(limit + 1)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].position_id if more and rows else None)

"""The ledger as the engine has it after replaying a journal, and as the projector wrote it to
SQL: transfers, account totals and withdrawals, in the same shape, to compare."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.events import WithdrawalRequested, WithdrawalResolved
from cashmarkets.core.ledger import Transfer
from cashmarkets.log.sqlite import SqliteJournal
from cashmarkets.store.db import create_engine
from cashmarkets.store.tables import accounts, ledger_transfers, withdrawals


async def expected_state(
    journal: Path,
) -> tuple[list[tuple[object, ...]], dict[int, tuple[int, ...]], dict[int, tuple[str, str]]]:
    log = SqliteJournal(journal)
    await log.open()
    engine = build_engine()
    transfers: list[tuple[object, ...]] = []
    wds: dict[int, tuple[str, str]] = {}
    after = None
    while page := await log.read_from(after, 5000):
        for record in page:
            cmd = engine.codec.command_decoder.decode(record.data)
            _, events = engine.apply(cmd)
            for e in events:
                if isinstance(e, Transfer):
                    transfers.append(
                        (
                            e.id,
                            e.seq,
                            cmd.ts_ns,
                            int(e.kind),
                            e.debit_account_id,
                            e.credit_account_id,
                            e.asset,
                            e.amount,
                            e.code,
                            e.pending_id,
                        )
                    )
                elif isinstance(e, WithdrawalRequested):
                    wds[e.hold_id] = ("pending", "")
                elif isinstance(e, WithdrawalResolved):
                    wds[e.hold_id] = (e.status, e.reference)
        after = page[-1].position
    await log.close()
    totals = {
        a.id: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
        for a in engine.ledger.accounts.values()
    }
    return transfers, totals, wds


async def actual_state(
    url: str,
) -> tuple[list[tuple[object, ...]], dict[int, tuple[int, ...]], dict[int, tuple[str, str]]]:
    db = create_engine(url)
    try:
        async with db.connect() as conn:
            rows = (
                await conn.execute(select(ledger_transfers).order_by(ledger_transfers.c.transfer_id))
            ).all()
            accs = (await conn.execute(select(accounts))).all()
            wds = (await conn.execute(select(withdrawals))).all()
    finally:
        await db.dispose()
    return (
        [tuple(r) for r in rows],
        {
            a.account_id: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
            for a in accs
        },
        {w.hold_id: (w.status, w.reference) for w in wds},
    )

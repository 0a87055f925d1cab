"""Reconciliation: where every unit of every asset is, and whether the books agree.

Per asset, money entered the system from `@world` (deposits less withdrawals) and sits in one of
four places: user accounts, product escrows (money in use: margins, bets, open orders), the house
(the counterparty of games and trades) and fees. The ledger is double-entry, so

    users + escrows + house + fees == deposits

holds whenever the ledger's invariants do; the report states it in those terms because that is the
sentence operators and auditors check. Products add their own checks through an optional
`reconcile()` method returning `Check`s (leverage: its escrow equals the margins of its open
positions), which catch a product whose state and ledger drifted apart.
"""

from __future__ import annotations

import msgspec

from cashmarkets.core.engine import Engine
from cashmarkets.core.ledger import FEES, HOUSE, WORLD


class AssetTotals(msgspec.Struct, kw_only=True):
    """Posted balances in minor units; `held` is the part of `users` held by pending transfers."""

    asset: str
    deposits: int
    users: int
    held: int
    escrows: dict[str, int]
    house: int
    fees: int
    other_system: int  # system accounts not named above (none today)
    balanced: bool


class Check(msgspec.Struct, kw_only=True):
    name: str
    expected: int
    actual: int
    ok: bool


class Reconciliation(msgspec.Struct, kw_only=True):
    seq: int
    ok: bool
    assets: list[AssetTotals]
    checks: list[Check]
    user_accounts: int


def check(name: str, expected: int, actual: int) -> Check:
    return Check(name=name, expected=expected, actual=actual, ok=expected == actual)


def reconcile(engine: Engine) -> Reconciliation:
    """The reconciliation of an engine's current state (reads only)."""
    ledger = engine.ledger
    totals: dict[str, dict[str, int]] = {}
    escrows: dict[str, dict[str, int]] = {}
    user_accounts = 0
    for acc in ledger.accounts.values():
        t = totals.setdefault(
            acc.asset, {"world": 0, "users": 0, "held": 0, "house": 0, "fees": 0, "other": 0}
        )
        balance = acc.credits_posted - acc.debits_posted
        if not acc.owner.startswith("@"):
            user_accounts += 1
            t["users"] += balance
            t["held"] += acc.debits_pending
        elif acc.owner == WORLD:
            t["world"] += balance
        elif acc.owner == HOUSE:
            t["house"] += balance
        elif acc.owner == FEES:
            t["fees"] += balance
        elif acc.owner.startswith("@escrow:"):
            per = escrows.setdefault(acc.asset, {})
            per[acc.owner] = per.get(acc.owner, 0) + balance
        else:
            t["other"] += balance
    assets = []
    for asset in sorted(totals):
        t = totals[asset]
        held_in_escrow = sum(escrows.get(asset, {}).values())
        deposits = -t["world"]
        inside = t["users"] + held_in_escrow + t["house"] + t["fees"] + t["other"]
        assets.append(
            AssetTotals(
                asset=asset,
                deposits=deposits,
                users=t["users"],
                held=t["held"],
                escrows=dict(sorted(escrows.get(asset, {}).items())),
                house=t["house"],
                fees=t["fees"],
                other_system=t["other"],
                balanced=inside == deposits,
            )
        )
    checks: list[Check] = []
    for product in engine.products.values():
        checks.extend(product.reconcile())
    ok = all(a.balanced for a in assets) and all(c.ok for c in checks)
    return Reconciliation(
        seq=engine.seq,
        ok=ok,
        assets=assets,
        checks=checks,
        user_accounts=user_accounts,
    )

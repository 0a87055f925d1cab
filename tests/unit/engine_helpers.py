"""Shared helpers for the engine and ledger unit tests: stamping commands, state fingerprints and a
seeded random workload."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from cashmarkets.core.commands import (
    Command,
    Deposit,
    LegSpec,
    LinkedTransfers,
    OpenAccount,
    PlaceHold,
    PostHold,
    TransferFunds,
    VoidHold,
    Withdraw,
)
from cashmarkets.core.engine import Engine, Result
from cashmarkets.core.ledger import PENDING, POST, SINGLE, VOID, Ledger

_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def stamp(engine: Engine, cmd: Command, ts_ns: int | None = None) -> Command:
    """Give cmd the next seq and a timestamp (default: one ns after the engine's clock)."""
    cmd.seq = engine.seq + 1
    cmd.ts_ns = engine.ts_ns + 1 if ts_ns is None else ts_ns
    return cmd


def stamp_apply(engine: Engine, cmd: Command, ts_ns: int | None = None) -> tuple[Result, list[Any]]:
    """Stamp cmd as the runtime would, then apply it."""
    return engine.apply(stamp(engine, cmd, ts_ns))


def ledger_bytes(target: Engine | Ledger) -> bytes:
    """The canonical encoding of a ledger's whole state (accounts, holds, id counters).

    Encoded at once: `Ledger.state()` hands out the live Account/Hold objects."""
    ledger = target.ledger if isinstance(target, Engine) else target
    return _ENCODER.encode(ledger.state())


def totals(ledger: Ledger, owner: str, asset: str) -> tuple[int, int, int, int]:
    """(debits_posted, credits_posted, debits_pending, credits_pending); zeros if no account."""
    acc = ledger.account(owner, asset)
    if acc is None:
        return (0, 0, 0, 0)
    return (acc.debits_posted, acc.credits_posted, acc.debits_pending, acc.credits_pending)


def random_command(rng: random.Random, index: int, users: list[str], assets: list[str]) -> Command:
    """One random ledger command; ids repeat now and then so dedup is exercised too."""
    repeat = index > 0 and rng.random() < 0.05
    command_id = f"c{rng.randrange(index)}" if repeat else f"c{index}"
    user = rng.choice(users)
    other = rng.choice(users)
    asset = rng.choice(assets)
    amount = rng.choice([0, 1, rng.randrange(1, 500), rng.randrange(1, 5000), -3])
    hold_id = rng.randrange(1, 2 * index + 2)
    kind = rng.randrange(8)
    if kind == 0:
        return OpenAccount(command_id=command_id, owner=user, asset=asset)
    if kind == 1:
        return Deposit(command_id=command_id, owner=user, asset=asset, amount=abs(amount) * 3)
    if kind == 2:
        return Withdraw(command_id=command_id, owner=user, asset=asset, amount=amount)
    if kind == 3:
        return TransferFunds(
            command_id=command_id, from_owner=user, to_owner=other, asset=asset, amount=amount
        )
    if kind == 4:
        to_owner = rng.choice([*users, "@house"])
        return PlaceHold(command_id=command_id, owner=user, to_owner=to_owner, asset=asset, amount=amount)
    if kind == 5:
        return PostHold(command_id=command_id, hold_id=hold_id, amount=rng.choice([0, 0, amount]))
    if kind == 6:
        return VoidHold(command_id=command_id, hold_id=hold_id)
    legs = []
    for _ in range(rng.randrange(1, 4)):
        leg_kind = rng.choice([SINGLE, PENDING, POST, VOID])
        legs.append(
            LegSpec(
                kind=leg_kind,
                from_owner=rng.choice(users),
                to_owner=rng.choice([*users, "@house"]),
                asset=asset,
                amount=rng.choice([0, 1, rng.randrange(1, 300)]),
                pending_id=rng.randrange(1, 2 * index + 2),
            )
        )
    return LinkedTransfers(command_id=command_id, legs=legs)


def random_workload(
    seed: int, count: int, users: list[str] | None = None, assets: list[str] | None = None
) -> list[Command]:
    """`count` random commands, already stamped with seq 1..count and non-decreasing ts_ns."""
    rng = random.Random(seed)
    users = users or ["ann", "ben", "cat", "dan"]
    assets = assets or ["USD", "BTC"]
    out: list[Command] = []
    ts_ns = 1_000
    for index in range(count):
        cmd = random_command(rng, index, users, assets)
        ts_ns += rng.choice([0, 1, 7, 1_000])
        cmd.seq = index + 1
        cmd.ts_ns = ts_ns
        out.append(cmd)
    return out


def apply_all(engine: Engine, cmds: list[Command]) -> list[Result]:
    """Apply pre-stamped commands in order."""
    return [engine.apply(cmd)[0] for cmd in cmds]

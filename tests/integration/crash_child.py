"""A runtime under load, for the crash test: run it, SIGKILL it, run it again.

Prints `RECOVERED <seq> <state_hash>` once recovery is done, then `ACK <command_id> <A|R> <seq>`
for every command whose acknowledgement it received (durable and applied), flushed at once, so
the parent knows exactly which commands a client was told about before the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from cashmarkets.bootstrap import build_runtime
from cashmarkets.core.commands import Command, Deposit, PlaceHold, PostHold, TransferFunds, VoidHold
from cashmarkets.core.results import Accepted, TransfersDone
from cashmarkets.ops.settings import Settings

USERS = 12


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--stream", default="cashmarkets:log")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--submitters", type=int, default=16)
    args = parser.parse_args()
    settings = Settings.from_env(
        {},
        data_dir=Path(args.data_dir),
        redis_url=args.redis_url,
        redis_stream=args.stream,
        snapshot_interval_s=0.2,
        snapshot_every_commands=400,
    )
    runtime = build_runtime(settings)
    await runtime.start()
    out(f"RECOVERED {runtime.engine.seq} {runtime.engine.state_hash()}")
    holds: list[int] = []

    async def submitter(i: int) -> None:
        rng = random.Random(f"{args.seed}-{args.run_id}-{i}")
        n = 0
        while True:
            n += 1
            cid = f"{args.run_id}-{i}-{n}"
            user = f"user-{rng.randrange(USERS)}"
            roll = rng.random()
            cmd: Command
            if roll < 0.3:
                cmd = Deposit(command_id=cid, owner=user, asset="USDC", amount=rng.randrange(1, 10_000))
            elif roll < 0.55:
                to = f"user-{rng.randrange(USERS)}"
                cmd = TransferFunds(
                    command_id=cid, from_owner=user, to_owner=to, asset="USDC", amount=rng.randrange(1, 5_000)
                )
            elif roll < 0.8 or not holds:
                cmd = PlaceHold(command_id=cid, owner=user, asset="USDC", amount=rng.randrange(1, 3_000))
            elif roll < 0.9:
                cmd = PostHold(
                    command_id=cid, hold_id=holds.pop(rng.randrange(len(holds))), amount=rng.choice([0, 1])
                )
            else:
                cmd = VoidHold(command_id=cid, hold_id=holds.pop(rng.randrange(len(holds))))
            result = await runtime.submit(cmd)
            accepted = isinstance(result, Accepted)
            if accepted and isinstance(cmd, PlaceHold) and isinstance(result.data, TransfersDone):
                holds.append(result.data.transfer_ids[0])
            out(f"ACK {cid} {'A' if accepted else 'R'} {result.seq}")

    await asyncio.gather(*(submitter(i) for i in range(args.submitters)))


if __name__ == "__main__":
    asyncio.run(main())

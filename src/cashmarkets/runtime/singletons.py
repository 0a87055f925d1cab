"""Running a "one per deployment" role that submits commands (the chart scheduler; the numbers
scheduler to come) under a fenced lease (store/leases.py, docs/decisions/018).

Each lease term starts with a ClaimFence command carrying the term's token: once the engine has
applied it, every command of the role carrying a lower token is refused (stale_fence), whatever
a former holder still has in flight. The role's runtime reads its own writes, so the state it
acts on includes everything the former holder got in before the claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from cashmarkets.core import codes
from cashmarkets.core.commands import ClaimFence
from cashmarkets.core.products.chartgame import FENCE_ROLE as CHART_ROLE
from cashmarkets.core.results import Rejected
from cashmarkets.ops.ids import new_id
from cashmarkets.ops.settings import Settings
from cashmarkets.store.leases import Lease, StaleFence, Term, hold

log = structlog.get_logger("cashmarkets.singletons")


async def claim(runtime: Any, term: Term) -> None:
    """Announce the term's token to the engine; StaleFence if a newer one is already there."""
    term.check()
    result = await runtime.submit(
        ClaimFence(command_id=f"fence:{term.role}:{term.token}:{new_id()}", role=term.role, token=term.token)
    )
    if isinstance(result, Rejected):
        if result.code == codes.STALE_FENCE:
            raise StaleFence(result.detail)
        raise RuntimeError(f"ClaimFence rejected: {result.code} {result.detail}")


def engine_floor(runtime: Any, role: str) -> Callable[[], Awaitable[int]]:
    """The lowest token worth taking: above the highest the engine has seen for `role`."""

    async def floor() -> int:
        return int(runtime.engine.fences.get(role, 0)) + 1

    return floor


async def chart_term(settings: Settings, runtime: Any, term: Term) -> None:
    """One term of the chart scheduler: claim, then schedule every game until the term ends."""
    from cashmarkets.runtime.chart_scheduler import stop_schedulers
    from cashmarkets.runtime.chart_setup import chart_schedulers

    await claim(runtime, term)
    schedulers = chart_schedulers(settings, runtime, fence=term)
    tasks = [asyncio.create_task(s.run(), name=f"chart-{s.game.game}") for s in schedulers]
    log.info(
        "chart scheduler running",
        games=[s.game.game for s in schedulers],
        token=term.token,
        seq=runtime.engine.seq,
    )
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a lost lease (LeaseLost) or a crashed scheduler ends the term
    finally:
        await stop_schedulers(schedulers, tasks)


def _preload(settings: Settings) -> None:
    """Import what a term needs before taking the lease: an import inside a term (BLS, a chain
    SDK: seconds on a busy machine) stalls the event loop, renewals included, and the term would
    be lost at once."""
    import cashmarkets.beacons.sources
    import cashmarkets.runtime.chart_scheduler
    import cashmarkets.runtime.chart_setup

    if settings.chain_adapter == "aptos":
        import cashmarkets.onchain.aptos  # noqa: F401


async def run_chart_role(settings: Settings, db: Any, runtime: Any, stop: asyncio.Event) -> None:
    """Hold the chart scheduler's lease in `db` and run its terms until `stop`."""
    _preload(settings)
    await hold(
        Lease(db, CHART_ROLE, ttl_s=settings.lease_ttl_s),
        lambda term: chart_term(settings, runtime, term),
        stop,
        floor=engine_floor(runtime, CHART_ROLE),
    )

"""The HTTP application. For now: liveness and readiness; the platform API builds on this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get

from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.bootstrap import build_runtime
from cashmarkets.runtime.runner import Runtime


def create_app(settings: Settings) -> Litestar:
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        await runtime.start()
        state["runtime"] = runtime
        try:
            yield
        finally:
            await runtime.stop()

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, object]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @get("/ready", sync_to_thread=False)
    def ready() -> dict[str, object]:
        """Ready: recovery finished and the engine is applying commands."""
        runtime = state.get("runtime")
        if runtime is None:
            return {"ready": False}
        return {"ready": True, "seq": runtime.engine.seq, "position": runtime.position}

    return Litestar(route_handlers=[health, ready], lifespan=[lifespan])

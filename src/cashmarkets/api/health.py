"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from sqlalchemy import text

from cashmarkets.ops import dependencies, metrics

# Each readiness check must answer within this (an unreachable Redis or PostgreSQL can take longer
# to refuse than a load balancer waits for /ready).
PROBE_TIMEOUT_S: Final = 1.0


@get("/health", sync_to_thread=False, tags=["ops"])
def health() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@get("/ready", tags=["ops"])
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready (200) when every dependency a route needs answers: the store; in distributed mode the
    log (Redis) and the engine's heartbeat; the projector's heartbeat, with the projection at most
    CASHMARKETS_READY_MAX_LAG_MS behind the engine. Otherwise 503, never 500: each check is run
    with a PROBE_TIMEOUT_S timeout and any failure is that check's reason in the body."""
    svc = getattr(request.app.state, "services", None)
    if svc is None:
        return Response({"ready": False, "checks": {"startup": "in progress"}}, status_code=503)
    try:
        probes = {"store": _store_probe(svc.db), **svc.extras.get("readiness", {})}
        names = list(probes)
        found = await asyncio.gather(*(_checked(probes[name]) for name in names))
        checks = dict(zip(names, found, strict=True))
    except Exception as exc:  # never a 500 from the probe of probes
        checks = {"readiness": f"error: {type(exc).__name__}"}
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"ready": ok, "checks": checks}
    projection = getattr(request.app.state, "projection", None)
    if projection is not None:
        body["projectionLagMs"] = projection.lag_ms
    return Response(body, status_code=200 if ok else 503)


def _store_probe(db: Any) -> Callable[[], Awaitable[str]]:
    async def probe() -> str:
        async with db.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"

    return probe


async def _checked(probe: Callable[[], Awaitable[str]]) -> str:
    """A probe's answer, or why it failed: its exception or its timeout."""
    try:
        return await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S} s"
    except Exception as exc:
        down = dependencies.unavailable(exc)
        return f"unavailable: {type(exc).__name__}" if down else f"error: {type(exc).__name__}"


@get("/metrics", sync_to_thread=False, tags=["ops"], include_in_schema=False)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Only with `Authorization: Bearer <CASHMARKETS_METRICS_TOKEN>`; otherwise (and when no token
    is set) 404, like a path that does not exist. Scrapers use CASHMARKETS_METRICS_PORT."""
    svc = getattr(request.app.state, "services", None)
    expected = svc.settings.metrics_token if svc is not None else None
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise NotFoundException()
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)

"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from sqlalchemy import text

from cashmarkets.api.services import services
from cashmarkets.ops import metrics


@get("/health", sync_to_thread=False, tags=["ops"])
def health() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@get("/ready", tags=["ops"])
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready: the store answers and the engine has caught up with the log (503 otherwise)."""
    svc = getattr(request.app.state, "services", None)
    checks: dict[str, Any] = {}
    if svc is None:
        return Response({"ready": False, "checks": {"startup": "in progress"}}, status_code=503)
    try:
        async with services(request).db.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {type(exc).__name__}"
    for name, probe in svc.extras.get("readiness", {}).items():
        checks[name] = await probe()
    ok = all(v == "ok" for v in checks.values())
    return Response({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


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

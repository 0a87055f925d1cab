"""Errors as RFC 9457 problem+json with a stable `code`.

    ApiError(status, code, detail)        raised by our handlers for expected failures
    ValidationException (Litestar/msgspec) -> 400 validation_failed, with field errors
    any other HTTPException               -> its status, a code named for it
    Redis / PostgreSQL / engine down      -> 503 dependency_unavailable + Retry-After (ops/dependencies)
    anything else                         -> 500 internal_error (a bug: logged with the request id)

Every body carries `requestId`, the same id as the `X-Request-Id` response header and the log lines.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from cashmarkets.api.context import request_id_of
from cashmarkets.ops import dependencies

log = structlog.get_logger("cashmarkets.api")

PROBLEM_JSON = "application/problem+json"

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",  # (a dependency down is 503 dependency_unavailable, by exception class)
    504: "timeout",
}


class ApiError(Exception):
    """An expected failure with an HTTP status and a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


def problem(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str = "",
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[Any]:
    request_id = request_id_of(request)
    if request.scope.get("state", {}).get("request_id_needs_header"):
        headers = {**(headers or {}), "x-request-id": request_id}
    body: dict[str, Any] = {
        "type": f"urn:cashmarkets:error:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
        "instance": request.url.path,
        "requestId": request_id,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def on_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return problem(
        request, exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra
    )


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                errors.append({"field": str(item.get("key", "")), "message": str(item.get("message", ""))})
    return problem(request, 400, "validation_failed", _short(exc.detail), errors=errors or None)


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        log.error("http error", status=status, detail=exc.detail, path=request.url.path)
    headers = dict(exc.headers or {})
    return problem(
        request, status, _CODES_BY_STATUS.get(status, f"http_{status}"), _short(exc.detail), headers=headers
    )


def on_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    down = dependencies.unavailable(exc)
    if down is not None:
        log.warning("dependency unavailable", dependency=down, path=request.url.path, error=repr(exc))
        return problem(request, **unavailable_problem(down))
    log.exception("unhandled error", path=request.url.path, error=repr(exc))
    return problem(request, 500, "internal_error", "an internal error occurred; quote the request id")


def unavailable_problem(dependency: str) -> dict[str, Any]:
    """The 503 of a request refused because `dependency` is down: retry after Retry-After."""
    return {
        "status": 503,
        "code": dependencies.CODE,
        "detail": f"{dependency} is unavailable; retry after Retry-After s (same Idempotency-Key)",
        "headers": {"retry-after": str(dependencies.RETRY_AFTER_S)},
        "extra": {"dependency": dependency},
    }


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."


EXCEPTION_HANDLERS: dict[Any, Any] = {
    # By status too: routing errors (404, 405) are looked up by status code before by class.
    404: on_http_error,
    405: on_http_error,
    ApiError: on_api_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_internal_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "ApiError", "MediaType", "problem"]

"""What the product modules (api/leverage.py, spot.py, chartgame.py) share: they do not import
each other (tests/unit/test_purity.py), so a helper two of them need lives here."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request

from cashmarkets.api.errors import ApiError


async def strict_body(request: Request[Any, Any, Any], kind: type[Any]) -> None:
    """Litestar decodes bodies leniently ("1000" becomes 1000); money fields must be real
    integers, so trading bodies are checked again, strictly."""
    try:
        msgspec.json.decode(await request.body(), type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(
            400, "validation_failed", str(exc), errors=[{"field": "data", "message": str(exc)}]
        ) from None

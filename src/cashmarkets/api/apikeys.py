"""`/api/v1/apikeys`: API keys for the Binance-compatible routes (`/api/v3`)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from msgspec import Meta

from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import Request as RequestBody
from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import services
from cashmarkets.store.api_keys import KEY_LENGTH, KEYS_PER_USER_MAX, LABEL_LENGTH_MAX, TooManyKeys


class ApiKeyCreate(RequestBody):
    label: Annotated[str, Meta(max_length=LABEL_LENGTH_MAX)] = ""


class ApiKeyCreated(ResponseBody):
    api_key: str
    secret: str  # shown once: only a sealed copy is kept
    label: str


class ApiKeyItem(ResponseBody):
    api_key: str
    label: str
    created_at_ns: int


class ApiKeyList(ResponseBody):
    keys: list[ApiKeyItem]


class ApiKeysController(Controller):
    path = "/api/v1/apikeys"
    tags = ["api keys"]
    dependencies = {"user": current_user}

    @post("/", status_code=201)
    async def create(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[ApiKeyCreate]
    ) -> ApiKeyCreated:
        """A new key and its secret (shown this once). Sign `/api/v3` requests with them."""
        try:
            api_key, secret = await services(request).api_keys.create(user.id, data.label)
        except TooManyKeys:
            raise ApiError(
                409, "too_many_api_keys", f"at most {KEYS_PER_USER_MAX} active keys per user"
            ) from None
        return ApiKeyCreated(api_key=api_key, secret=secret, label=data.label)

    @get("/")
    async def list_keys(self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]) -> ApiKeyList:
        rows = await services(request).api_keys.list(user.id)
        return ApiKeyList(
            keys=[ApiKeyItem(api_key=r.api_key, label=r.label, created_at_ns=r.created_at_ns) for r in rows]
        )

    @delete("/{api_key:str}", status_code=204)
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        api_key: Annotated[str, PathParameter(min_length=1, max_length=KEY_LENGTH)],
    ) -> None:
        if not await services(request).api_keys.revoke(user.id, api_key):
            raise ApiError(404, "api_key_not_found", "no active key with this id")

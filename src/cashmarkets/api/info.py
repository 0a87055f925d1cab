"""`GET /api/v1/info`: what a client needs to connect: versions, the WebSocket URL and its topics."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Request, get

from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.services import services
from cashmarkets.gateway.protocol import PROTOCOL_VERSION
from cashmarkets.gateway.server import WS_PATH
from cashmarkets.gateway.topics import PRIVATE_TOPICS


class WebSocketInfo(ResponseBody):
    url: str
    protocol_version: int
    codecs: list[str]
    topics: list[str]
    private_topics: list[str]


class Info(ResponseBody):
    api_version: str
    mode: str
    websocket: WebSocketInfo | None = None


@get("/api/v1/info", tags=["platform"], sync_to_thread=False)
def info(request: Request[Any, Any, Any]) -> Info:
    """Versions, and where the WebSocket gateway listens with the topics it serves."""
    svc = services(request)
    gateway = svc.gateway
    websocket = None
    if gateway is not None:
        host = urlsplit(svc.settings.base_url).hostname or svc.settings.host
        websocket = WebSocketInfo(
            url=f"ws://{host}:{svc.ws_port}{WS_PATH}",
            protocol_version=PROTOCOL_VERSION,
            codecs=["json", "binary"],
            topics=gateway.registry.names(),
            private_topics=sorted(PRIVATE_TOPICS),
        )
    return Info(
        api_version="1", mode="distributed" if svc.settings.distributed else "embedded", websocket=websocket
    )

"""Leverage: perpetual-futures positions on live prices (core/products/leverage.py)."""

from __future__ import annotations

from typing import Any

from cashmarkets.core import codes
from cashmarkets.products.leverage import drivers
from cashmarkets.products.module import ProductModule, Projection


def _engine_product() -> Any:
    from cashmarkets.core.products.leverage import LeverageProduct

    return LeverageProduct.factory()


def _routes() -> list[Any]:
    from cashmarkets.api.leverage import LeverageController

    return [LeverageController]


def _socket_commands() -> dict[str, Any]:
    from cashmarkets.products.leverage import socket

    return {"leverage.open": socket.open_position, "leverage.close": socket.close_position}


def _streams(registry: Any, engine: Any) -> Any:
    from cashmarkets.gateway.leverage_streams import LeverageStreams

    return LeverageStreams(registry, engine)


def _events() -> frozenset[type]:
    from cashmarkets.projection.leverage import EVENTS

    return EVENTS


def _batch() -> Any:
    from cashmarkets.projection.leverage import LeverageBatch

    return LeverageBatch()


MODULE = ProductModule(
    name="leverage",
    engine_product=_engine_product,
    http_statuses={codes.POSITION_NOT_FOUND: 404},
    routes=_routes,
    socket_commands=_socket_commands,
    streams=_streams,
    projection=Projection(events=_events, batch=_batch),
    embedded_drivers=(drivers.price_feed,),
    engine_subscribers=(drivers.price_publisher,),
    cli=drivers.add_commands,
)

"""A product that lives only in the tests, added to a deployment through the registration line
(`CASHMARKETS_PRODUCTS=+tests.support.coinflip`): its route, socket command, stream and
projection reach every hub with no hub edited for it (tests/e2e/test_product_registry.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cashmarkets.products.module import ProductModule, Projection
from tests.support.coinflip.core import BAD_CALL


def _engine_product() -> Any:
    from tests.support.coinflip.core import CoinflipProduct

    return lambda engine: CoinflipProduct(engine)


def _routes() -> list[Any]:
    from tests.support.coinflip.api import CoinflipController

    return [CoinflipController]


def _socket_commands() -> dict[str, Any]:
    from tests.support.coinflip.api import socket_flip

    return {"coinflip.flip": socket_flip}


def _streams(registry: Any, engine: Any) -> Any:
    from tests.support.coinflip.streams import CoinflipStreams

    return CoinflipStreams(registry, engine)


def _events() -> frozenset[type]:
    from tests.support.coinflip.projection import EVENTS

    return EVENTS


def _batch() -> Any:
    from tests.support.coinflip.projection import CoinflipBatch

    return CoinflipBatch()


MODULE = ProductModule(
    name="coinflip",
    engine_product=_engine_product,
    http_statuses={BAD_CALL: 400},
    descriptions={BAD_CALL: "A call is heads or tails."},
    routes=_routes,
    socket_commands=_socket_commands,
    streams=_streams,
    projection=Projection(events=_events, batch=_batch, migrations=Path(__file__).parent / "migrations"),
)

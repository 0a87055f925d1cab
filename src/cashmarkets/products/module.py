"""`ProductModule`: everything one product brings to the outer ring, named in one place.

Each field is read by one hub; a field a product does not need keeps its empty default. The
callables import their targets when called (not when the module is imported), so a product's
declaration can be loaded by any process (the engine, the projector, the gateway) without
pulling in the others' layers, and without import cycles through the hubs that read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import typer

    from cashmarkets.gateway.protocol import MsgType

# (services, user id, payload without idempotencyKey, engine command id) -> (reply type, data)
SocketHandler = Callable[[Any, str, dict[str, Any], str], Awaitable[tuple["MsgType", Any]]]


class Streams(Protocol):
    """A product's side of the gateway bridge: its events -> topics (declared on construction)."""

    def on_events(self, events: list[Any], ts_ms: int) -> None: ...

    def snapshot(self, user_id: str) -> list[tuple[MsgType, Any]]:
        """What a new subscriber of the user's private `account` topic gets first."""
        ...


class Batch(Protocol):
    """A product's rows of one projector batch, written in the batch's transaction."""

    def __bool__(self) -> bool: ...

    def add(self, event: Any, ts_ns: int) -> None: ...

    async def write(self, conn: Any, insert: Any, partitions: frozenset[str]) -> set[str]:
        """Write the rows; return the candle partitions created (PostgreSQL), if any."""
        ...


@dataclass(frozen=True)
class Projection:
    """Engine events -> SQL rows: which events, the batch class, and where its tables come from."""

    events: Callable[[], frozenset[type]]
    batch: Callable[[], Batch]
    # Alembic revisions of the product's tables (a branch of its own); None: they are in the
    # store's own history (the products that predate the registry).
    migrations: Path | None = None


@dataclass(frozen=True)
class EmbeddedContext:
    """What an in-process driver gets in `cashmarkets serve`."""

    settings: Any
    db: Any  # the store's AsyncEngine
    runtime: Any  # the live Runtime


# A driver run by `serve` in the API's process: started on enter, stopped on exit.
EmbeddedDriver = Callable[[EmbeddedContext], contextlib.AbstractAsyncContextManager[None]]


# Compared (and hashed) by identity: each is declared once, and the hubs cache per registry.
@dataclass(frozen=True, eq=False)
class ProductModule:
    """One product's declaration: what it brings to each hub (docs/adding-a-product.md)."""

    name: str
    # The core Product (or a factory taking the engine), pure; None: no engine state of its own.
    engine_product: Callable[[], Any] | None = None
    # Rejection code -> HTTP status (the rest are 422) and description, for this product's codes.
    http_statuses: Mapping[str, int] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    # Litestar route handlers / controllers (they reach the typed services through the request).
    routes: Callable[[], Sequence[Any]] = lambda: ()
    # Socket command name ("leverage.open") -> handler; sent as {"command": name, ...}.
    socket_commands: Callable[[], Mapping[str, SocketHandler]] = lambda: {}
    # (topic registry, engine) -> the product's streams; None: it publishes nothing.
    streams: Callable[[Any, Any], Streams] | None = None
    projection: Projection | None = None
    # What `serve` runs in process (feeds, schedulers, bots).
    embedded_drivers: Sequence[EmbeddedDriver] = ()
    # (redis client, stream, engine) -> an engine subscriber the distributed engine process runs.
    engine_subscribers: Sequence[Callable[[Any, str, Any], Callable[[list[Any]], None]]] = ()
    # Adds the product's CLI subcommands (its distributed-mode processes among them).
    cli: Callable[[typer.Typer], None] | None = None

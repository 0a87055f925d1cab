"""An in-process embedded server (real SQLite journal and store) and small client helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from cashmarkets.api.app import create_app
from cashmarkets.api.services import Services
from cashmarkets.ops.settings import Settings

PASSWORD = "correct horse battery"


@asynccontextmanager
async def embedded(tmp_path: Path, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    # No price feed unless a test asks: tests script their prices.
    overrides.setdefault("price_source", "none")
    overrides.setdefault("spot_bot", False)  # tests place their own orders on empty books
    overrides.setdefault("chartgame", False)  # tests run rounds themselves
    # The projector as a task in the app's loop, so tests can wait for it; the child-process
    # projector of `serve` is covered by the e2e tests.
    overrides.setdefault("projector_process", False)
    overrides.setdefault("ws_port", 0)  # the gateway on any free port (many apps run at once)
    # Tests fund users freely; the faucet's daily maximum has its own tests.
    overrides.setdefault("faucet_daily_max", "USDC=1000000000,BTC=1000000,ETH=1000000,SOL=1000000")
    settings = Settings.from_env({}, data_dir=tmp_path / "data", snapshot_interval_s=3600, **overrides)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


def services_of(client: AsyncTestClient[Any]) -> Services:
    found: Services = client.app.state.services
    return found


async def signup(client: AsyncTestClient[Any], email: str) -> dict[str, Any]:
    response = await client.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert response.cookies.get("authToken") == response.json()["token"]
    # Tests say who they are with a header; a cookie left in the jar would authenticate silently.
    client.cookies.clear()
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin(client: AsyncTestClient[Any], email: str = "admin@example.com") -> dict[str, str]:
    """Sign up a user, make them admin in the store, sign in again for a token with the role."""
    body = await signup(client, email)
    assert await services_of(client).users.set_role(body["user"]["id"], "admin")
    response = await client.post("/api/v1/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    client.cookies.clear()
    return bearer(response.json()["token"])


async def wait_projected(client: AsyncTestClient[Any]) -> None:
    """Until the projector has committed everything the engine applied (reads from SQL see every
    write): `Projector.seq` is the committed checkpoint, not the replica's position."""
    import asyncio

    svc = services_of(client)
    assert svc.projector is not None and svc.runtime is not None
    for _ in range(500):
        if svc.projector.seq >= svc.runtime.engine.seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("projector did not catch up")


async def wait_committed(client: AsyncTestClient[Any]) -> None:
    """Until the projector's checkpoint *in SQL* has reached the engine's seq.

    Stricter than `wait_projected`: `Projector.seq` is the seq of its in-memory engine, which
    moves before the batch's SQL transaction commits, so right after `wait_projected` a read may
    still miss the last batch's rows. The checkpoint row commits together with them.
    """
    import asyncio

    from sqlalchemy import select

    from cashmarkets.projection.projector import NAME
    from cashmarkets.store.tables import projector_checkpoints

    services = services_of(client)
    target = services.runtime.engine.seq
    query = select(projector_checkpoints.c.seq).where(projector_checkpoints.c.name == NAME)
    for _ in range(500):
        async with services.db.connect() as conn:
            seq = (await conn.execute(query)).scalar()
        if seq is not None and int(seq) >= target:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("projector checkpoint did not catch up")


async def on_app_loop(client: AsyncTestClient[Any], coro: Any) -> Any:
    """Run a coroutine on the app's own event loop (the test client runs the app in a thread)."""
    import asyncio

    runtime = services_of(client).runtime
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, runtime._writer.get_loop()))


def ws_url(client: AsyncTestClient[Any], query: str = "") -> str:
    port = services_of(client).ws_port
    return f"ws://127.0.0.1:{port}/ws" + (f"?{query}" if query else "")

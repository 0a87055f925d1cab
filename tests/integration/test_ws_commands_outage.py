"""Socket commands during an outage answer UNAVAILABLE with reason `dependency_unavailable` and a
retry delay, the socket's form of HTTP's 503, never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cashmarkets.api.app import build_services
from cashmarkets.api.ratelimit import build_limiters
from cashmarkets.api.ws_commands import SocketCommands
from cashmarkets.gateway.protocol import ErrorCode, MsgType, ProtocolError
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.bootstrap import build_engine
from cashmarkets.runtime.distributed import RedisBus, SqlBalances
from cashmarkets.store import migrate
from cashmarkets.store.db import create_engine
from tests.support.private_pg import TcpProxy
from tests.support.private_redis import private_redis

pytestmark = pytest.mark.postgres

OPEN = {"asset": "BTC", "type": "long", "margin": 1000, "leverage": 2}


async def _refused(commands: SocketCommands, kind: MsgType, payload: dict[str, object]) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        await commands("user-1", kind, dict(payload))
    return refused.value


async def test_socket_commands_in_redis_and_store_outages_are_dependency_unavailable(
    pg_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(pg_url)
    with private_redis() as redis_server, TcpProxy(5432) as proxy:
        settings = Settings.from_env(
            {},
            database_url=pg_url,
            redis_url=redis_server.url(),
            jwt_secret="test-secret-" + "x" * 40,
            apikey_master_key="ab" * 32,
            data_dir=tmp_path,
        )
        db = create_engine(pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/"))
        bus = RedisBus(redis_server.url(), "cashmarkets:test", build_engine().codec)
        await bus.start()
        try:
            services = build_services(settings, db, bus, SqlBalances(db, bus.client, "cashmarkets:test"), {})
            commands = SocketCommands(services, build_limiters(settings, bus.client)["user"])
            proxy.cut()  # the store: a balance read
            error = await _refused(commands, MsgType.GET_BALANCE, {})
            assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "dependency_unavailable")
            assert error.retry_after_ms >= 1000
            proxy.heal()
            redis_server.kill()  # Redis: the rate limit, prices and the command log
            for kind, payload in ((MsgType.OPEN_POSITION, OPEN), (MsgType.GET_BALANCE, {})):
                error = await _refused(commands, kind, payload)
                assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "dependency_unavailable")
        finally:
            await bus.close()
            await db.dispose()

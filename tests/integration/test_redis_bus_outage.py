"""RedisBus (the API side of the command path) across a Redis outage: the reply channel is
subscribed again, and a reply published while it was not is found in the stored results."""

from __future__ import annotations

import asyncio

import pytest

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.results import Accepted
from cashmarkets.runtime.distributed import RESULT_KEY, RESULT_TTL_S, RedisBus
from tests.support.private_redis import private_redis

pytestmark = pytest.mark.redis


async def test_waiters_whose_reply_was_lost_are_answered_from_the_stored_results() -> None:
    with private_redis() as server:
        codec = build_engine().codec
        bus = RedisBus(server.url(), "cashmarkets:test:bus", codec)
        await bus.start()
        try:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            bus._pending["c1"] = future  # a caller waiting for its reply
            # The engine applied c1 and SET its result; its PUBLISH is lost with the connection.
            result = Accepted(seq=7, command_id="c1")
            key = RESULT_KEY.format("cashmarkets:test:bus", "c1")
            await bus.client.set(key, codec.encoder.encode(result), ex=RESULT_TTL_S)
            server.kill()
            await asyncio.sleep(0.3)  # the listener notices and retries
            assert not future.done()
            server.start()  # the AOF keeps the result
            answered = await asyncio.wait_for(future, 30)
            assert isinstance(answered, Accepted) and (answered.seq, answered.command_id) == (7, "c1")
        finally:
            bus._pending.pop("c1", None)
            await bus.close()

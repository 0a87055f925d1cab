"""Half-open connections (issue 15): the HTTP server's header timeout and per-address limit
(uvicorn with `GuardedHttpToolsProtocol`, in process, real sockets on loopback), the gateway's
handshake limits (picows), the open-files limit, and the per-address counts."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import uvicorn
from websockets.asyncio.client import connect

from cashmarkets.api.httpserver import guarded_protocol
from cashmarkets.gateway.server import Gateway, GatewayLimits
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.ops import metrics
from cashmarkets.ops.limits import PerIpConnections, TrustedPeers, peer_ip

CLIENT, OTHER = "127.0.0.1", "127.0.0.2"
READ_TIMEOUT_S = 10.0
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
PARTIAL = b"GET / HTTP/1.1\r\nHost: x\r\n"


def closed(server: str, reason: str) -> float:
    return metrics.CONNECTIONS_CLOSED.labels(server, reason)._value.get()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/slow` answers after 1 s; anything else at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def http_server(*, header_timeout_s: float, per_ip: int, trusted: str = "") -> AsyncIterator[int]:
    protocol = guarded_protocol(
        header_timeout_s=header_timeout_s, connections_per_ip=per_ip, trusted_proxies=trusted
    )
    config = uvicorn.Config(
        app, host=CLIENT, port=0, http=protocol, lifespan="off", log_level="warning", timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def open_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(CLIENT, port, local_addr=(source, 0))


async def until_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    data = b""
    with suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), READ_TIMEOUT_S):
            data += chunk
    return data


async def response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def get(source: str, port: int) -> bytes:
    reader, writer = await open_from(source, port)
    writer.write(GET)
    try:
        return await response(reader)
    finally:
        writer.close()


async def test_over_the_per_address_limit_a_connection_gets_503_at_once(tmp_path: Any) -> None:
    refused = closed("http", "per_ip_limit")
    async with http_server(header_timeout_s=30, per_ip=2) as port:
        held = [await open_from(CLIENT, port) for _ in range(2)]
        for reader, writer in held:  # answered: both are counted before the next one comes
            writer.write(GET)
            assert (await response(reader)).startswith(b"HTTP/1.1 200")
        reader, writer = await open_from(CLIENT, port)
        writer.write(GET)
        answer = await until_eof(reader)  # closed without waiting for any timeout
        assert answer.startswith(b"HTTP/1.1 503")
        assert answer.endswith(b"too many connections from this address\n")
        assert closed("http", "per_ip_limit") == refused + 1
        assert (await get(OTHER, port)).startswith(b"HTTP/1.1 200")  # another address is not limited
        # A closed connection frees its place.
        held[0][1].close()
        await until_eof(held[0][0])
        for _ in range(100):
            answer = await get(CLIENT, port)
            if not answer.startswith(b"HTTP/1.1 503"):
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        held[1][1].close()


async def test_trusted_proxies_are_not_limited() -> None:
    async with http_server(header_timeout_s=30, per_ip=1, trusted=CLIENT) as port:
        held = [await open_from(CLIENT, port) for _ in range(3)]
        for reader, writer in held:
            writer.write(GET)
            assert (await response(reader)).startswith(b"HTTP/1.1 200")
        first = await open_from(OTHER, port)
        first[1].write(GET)
        assert (await response(first[0])).startswith(b"HTTP/1.1 200")
        second = await open_from(OTHER, port)
        assert (await until_eof(second[0])).startswith(b"HTTP/1.1 503")
        for _, writer in [*held, first]:
            writer.close()


async def test_headers_must_come_in_time_on_new_and_kept_alive_connections() -> None:
    timeouts = closed("http", "header_timeout")
    async with http_server(header_timeout_s=0.5, per_ip=10) as port:
        idle = await open_from(CLIENT, port)  # says nothing: closed without an answer
        partial = await open_from(CLIENT, port)
        partial[1].write(PARTIAL)
        kept = await open_from(CLIENT, port)  # one request answered, then a partial one
        kept[1].write(GET)
        assert (await response(kept[0])).startswith(b"HTTP/1.1 200")
        kept[1].write(PARTIAL)
        slow = await open_from(CLIENT, port)  # headers in pieces, complete in time: answered
        slow[1].write(PARTIAL[:10])
        await asyncio.sleep(0.1)
        slow[1].write(PARTIAL[10:] + b"\r\n")
        assert (await response(slow[0])).startswith(b"HTTP/1.1 200")

        assert await until_eof(idle[0]) == b""
        assert (await until_eof(partial[0])).startswith(b"HTTP/1.1 408")
        assert (await until_eof(kept[0])).startswith(b"HTTP/1.1 408")
        assert closed("http", "header_timeout") == timeouts + 3
        for _, writer in (idle, partial, kept, slow):
            writer.close()


async def test_the_header_timeout_waits_while_an_earlier_request_is_answered() -> None:
    async with http_server(header_timeout_s=0.3, per_ip=10) as port:
        reader, writer = await open_from(CLIENT, port)
        # A pipelined request begins while /slow (1 s) is being answered: its headers' time
        # starts counting only once /slow's answer is out.
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + PARTIAL)
        everything = await until_eof(reader)
        assert everything.startswith(b"HTTP/1.1 200") and b"\r\n\r\nok" in everything, everything
        assert b"HTTP/1.1 408" in everything.split(b"\r\n\r\nok", 1)[1]
        writer.close()


# ---- the gateway --------------------------------------------------------------------------------


@asynccontextmanager
async def gateway(**limits: Any) -> AsyncIterator[tuple[Gateway, int]]:
    gw = Gateway(TopicRegistry(), sessions=None, limits=GatewayLimits(**limits))
    port = await gw.start(CLIENT, 0)
    try:
        yield gw, port
    finally:
        await gw.stop()


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def test_the_gateway_limits_and_times_connections_before_their_upgrade() -> None:
    refused, timeouts = closed("ws", "per_ip_limit"), closed("ws", "header_timeout")
    async with gateway(handshakes_per_ip=2, handshake_timeout_s=1.0) as (gw, port):
        waiting = []
        for _ in range(2):
            waiting.append(await open_from(CLIENT, port))
            waiting[-1][1].write(PARTIAL)
        await until(lambda: gw.handshaking.counts.get(CLIENT) == 2)
        third = await open_from(CLIENT, port)
        third[1].write(PARTIAL)
        assert await until_eof(third[0]) == b""  # closed at once, nothing said
        assert closed("ws", "per_ip_limit") == refused + 1 and closed("ws", "header_timeout") == timeouts
        # Another address upgrades and talks meanwhile.
        async with connect(f"ws://{CLIENT}:{port}/ws", local_addr=(OTHER, 0)) as ws:
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
            assert json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT_S)) == {"id": 7, "result": []}
        # The two waiting ones are closed by the timeout.
        for reader, writer in waiting:
            assert await until_eof(reader) == b""
            writer.close()
        await until(lambda: closed("ws", "header_timeout") == timeouts + 2)
        await until(lambda: not gw.handshaking.counts)
        # Upgraded connections no longer count as handshakes: three from one address are fine.
        sockets = [await connect(f"ws://{CLIENT}:{port}/ws").__aenter__() for _ in range(3)]
        assert gw.handshaking.counts == {} and gw.per_ip[CLIENT] == 3
        for ws in sockets:
            await ws.close()
        assert closed("ws", "per_ip_limit") == refused + 1


# ---- limits -------------------------------------------------------------------------------------


def test_per_address_counts_with_trusted_proxies() -> None:
    counts = PerIpConnections(2, "10.0.0.1, 192.168.0.0/16, ::1")
    assert counts.admit("1.2.3.4") and counts.admit("1.2.3.4") and not counts.admit("1.2.3.4")
    counts.release("1.2.3.4")
    assert counts.admit("1.2.3.4") and not counts.admit("1.2.3.4")
    for trusted in ("10.0.0.1", "192.168.7.9", "::1"):
        assert all(counts.admit(trusted) for _ in range(5))
    for ip in ["1.2.3.4"] * 2 + ["10.0.0.1", "192.168.7.9", "::1"] * 5:
        counts.release(ip)
    assert counts.counts == {}
    assert all(PerIpConnections(0).admit("1.2.3.4") for _ in range(1000))  # 0: no limit
    assert "anything" in TrustedPeers("*") and "10.0.0.2" not in TrustedPeers("10.0.0.1,bad/net")


def test_peer_ip_of_a_transport() -> None:
    class Transport:
        def __init__(self, peer: Any) -> None:
            self.peer = peer

        def get_extra_info(self, name: str) -> Any:
            return self.peer if name == "peername" else None

    assert peer_ip(Transport(("10.1.2.3", 5))) == "10.1.2.3"
    assert peer_ip(Transport(("::ffff:10.1.2.3", 5, 0, 0))) == "10.1.2.3"
    assert peer_ip(Transport(("2001:db8::1", 5, 0, 0))) == "2001:db8::1"
    assert peer_ip(Transport("")) == ""  # a Unix socket


def test_the_open_files_limit_is_raised_to_the_hard_limit_or_as_configured() -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)

    def run(wanted: str) -> tuple[list[int], list[dict[str, Any]]]:
        code = (
            "import json, resource; from cashmarkets.ops.logging import configure_logging;"
            "from cashmarkets.ops.limits import raise_open_files_limit as r; configure_logging();"
            f"r({wanted}); r({wanted}); print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        )
        assert done.returncode == 0, done.stderr
        logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        return json.loads(done.stdout), [e for e in logs if e["event"].startswith("open files limit")]

    limits, logged = run("None")
    assert limits == [hard, hard]
    assert [(e["event"], e["soft_before"], e["soft"], e["hard"]) for e in logged] == [
        ("open files limit", 256, hard, hard)
    ]  # once, though called twice
    assert run("300")[0] == [300, hard]
    assert run("0")[0] == [256, hard]  # 0: as inherited
    limits, logged = run(str(hard + 1))
    assert limits == [hard, hard] and logged[0]["event"] == "open files limit capped at the hard limit"

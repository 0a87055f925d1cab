"""The WebSocket gateway: picows server, one `Connection` per client, subscriptions into a
`TopicRegistry`. Every limit is in `GatewayLimits` and listed in docs/websocket.md.

Nothing a client sends can stop the gateway: a bad message gets an error reply (or, for protocol
violations the docs name, a close with a code and reason), and a client that reads too slowly is
disconnected once its unsent bytes pass `outbound_buffer_bytes_max`, never allowed to slow the
others or to grow memory without bound.

A signed-in connection stays signed in only while its token would still be accepted over HTTP: a
timer closes it (4001) when the token expires unless a fresh token came with `AUTH` first, every
command checks the user's live state (role, status, token version, revoked sign-ins), and a sweep
every `REVALIDATE_INTERVAL_S` reads the state of every signed-in user and closes (4001) the
connections whose sign-in was revoked or whose account was disabled. None of it is on the fan-out
path: a topic message costs no check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import msgspec
import structlog
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

from cashmarkets.gateway.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    MsgType,
    ProtocolError,
    binary_frame,
    json_error,
    json_result,
    parse_binary,
    parse_json,
)
from cashmarkets.gateway.topics import TopicRegistry, count_sent
from cashmarkets.ops import metrics
from cashmarkets.ops.limits import PerIpConnections, peer_ip
from cashmarkets.ops.nesting import pin_recursion_limit

log = structlog.get_logger("cashmarkets.gateway")

WS_PATH: Final = "/ws"
CLOSE_FLUSH_TIMEOUT_S: Final = 5.0
LISTEN_BACKLOG: Final = 4096  # connections waiting to be accepted (asyncio's default is 100)
# Signed-in connections are checked against their users' live state this often (and closed with
# CLOSE_SIGNED_OUT when their sign-in was revoked or their account disabled).
REVALIDATE_INTERVAL_S: Final = 1.0
# The token expired, or the sign-in was revoked, or the account disabled: sign in again.
CLOSE_SIGNED_OUT: Final = WSCloseCode(4001)
# Frames a client may send while its sign-in is being checked (they are handled after, in order).
HELD_FRAMES_MAX: Final = 64


def _abort(transport: WSTransport) -> None:
    if not transport.is_disconnected:
        transport.underlying_transport.abort()


class GatewayLimits(msgspec.Struct, frozen=True, kw_only=True):
    subscriptions_per_connection: int = 64
    commands_in_flight_per_connection: int = 16
    # Running at once over all of a user's connections to this process; more wait their turn.
    commands_in_flight_per_user: int = 32
    message_bytes_max: int = 64 * 1024  # a bigger client frame: close 1009
    connections_per_ip: int = 1_000
    connections_per_user: int = 32
    outbound_buffer_bytes_max: int = 4 * 1024 * 1024  # unsent bytes before a slow consumer is cut
    ping_idle_s: float = 20.0  # ping a connection silent for this long ...
    pong_timeout_s: float = 10.0  # ... and close it if no pong comes back in this long
    # Before the upgrade: the request's headers must come within this, and one address may have at
    # most this many connections still sending them (0: no limit; trusted proxies are exempt).
    handshake_timeout_s: float = 10.0
    handshakes_per_ip: int = 256
    trusted_proxies: str = ""


def gateway_limits(settings: Any) -> GatewayLimits:
    """The limits from `CASHMARKETS_WS_*` settings."""
    return GatewayLimits(
        subscriptions_per_connection=settings.ws_subscriptions_per_connection,
        commands_in_flight_per_connection=settings.ws_commands_in_flight_per_connection,
        commands_in_flight_per_user=settings.ws_commands_in_flight_per_user,
        message_bytes_max=settings.ws_message_bytes_max,
        connections_per_ip=settings.ws_connections_per_ip,
        connections_per_user=settings.ws_connections_per_user,
        outbound_buffer_bytes_max=settings.ws_outbound_buffer_bytes_max,
        ping_idle_s=settings.ws_ping_idle_s,
        pong_timeout_s=settings.ws_pong_timeout_s,
        handshake_timeout_s=settings.http_header_timeout_s,
        handshakes_per_ip=settings.http_connections_per_ip,
        trusted_proxies=settings.forwarded_allow_ips,
    )


class Gateway:
    """Owns the server socket, the per-IP/per-user connection counts and the topic registry.

    `sessions` checks tokens (`cashmarkets.api.security.Sessions`): `verify(token)` (signature
    and expiry, from memory), `cached(claims)` (the live verdict if the user's state is in memory),
    `check(claims)` (the live verdict, reading the store when needed) and `still_valid(claims
    list)` (reading every one of those users' state now)."""

    def __init__(
        self,
        registry: TopicRegistry,
        sessions: Any,
        limits: GatewayLimits | None = None,
        commands: Callable[[str, int, dict[str, Any]], Awaitable[tuple[MsgType, Any]]] | None = None,
        *,
        revalidate_s: float = REVALIDATE_INTERVAL_S,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.revalidate_s = revalidate_s
        self._sweeper: asyncio.Task[None] | None = None
        # (user id, message type, payload) -> (reply type, data); raises ProtocolError
        self.commands = commands
        self.limits = limits or GatewayLimits()
        self.per_ip: dict[str, int] = {}
        self.per_user: dict[str, int] = {}
        # TCP connections per address that have not yet sent their upgrade request's headers.
        self.handshaking = PerIpConnections(self.limits.handshakes_per_ip, self.limits.trusted_proxies)
        self.commands_per_user: dict[str, int] = {}  # commands running, over the user's connections
        # Per user, their connections with commands waiting for a slot, in turn (a dict as an
        # ordered set).
        self.waiting: dict[str, dict[Connection, None]] = {}
        self.connections: set[Connection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int, **kwargs: Any) -> int:
        """Listen; returns the port (useful with port 0)."""
        # Deep client frames must fail as decode errors, never overflow the C stack (ops/nesting.py).
        pin_recursion_limit()
        # picows logs every connection at INFO: thousands of lines a second at scale.
        logging.getLogger("picows").setLevel(logging.WARNING)
        kwargs.setdefault("backlog", LISTEN_BACKLOG)
        # Build one now: a picows whose WSProtocol takes other arguments fails here, at start,
        # rather than at each accept (where the server would drop the connection silently).
        self._protocol()
        self.server = await _create_server(self._protocol, host=host, port=port, **kwargs)
        sock = self.server.sockets[0]
        bound: int = sock.getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(
            self._revalidate_forever(), name="ws-revalidate"
        )
        log.info("gateway listening", host=host, port=bound, path=WS_PATH)
        return bound

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.close(WSCloseCode.GOING_AWAY, "server shutting down")
            await self.server.wait_closed()

    def _protocol(self) -> _GuardedWSProtocol:
        """picows' protocol for one TCP connection, as `picows.ws_create_server` makes it (with
        our limits), counted per address and timed until its upgrade request's headers are in."""
        handshake = _Handshake(self.handshaking, self.limits.handshake_timeout_s)
        protocol = _GuardedWSProtocol(
            host_port=None,
            ws_path=None,
            is_client_side=False,
            ws_listener_factory=handshake.listener_factory(self._factory),
            logger=_PICOWS_LOGGER,
            disconnect_on_exception=True,
            websocket_handshake_timeout=None,  # _Handshake's: the same, with a metric
            enable_auto_ping=True,
            auto_ping_idle_timeout=self.limits.ping_idle_s,
            auto_ping_reply_timeout=self.limits.pong_timeout_s,
            auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
            enable_auto_pong=True,
            max_frame_size=self.limits.message_bytes_max,
            extra_headers=None,
            read_buffer_init_size=16 * 1024,
        )
        protocol._handshake = handshake
        return protocol

    def _factory(self, request: WSUpgradeRequest) -> Any:
        target = urlsplit(request.path.decode("latin-1") if isinstance(request.path, bytes) else request.path)
        if target.path != WS_PATH:
            return None  # 404
        query = parse_qs(target.query)
        codec = (query.get("codec") or [""])[0]
        if codec not in ("", "json", "binary", "msgpack"):
            return _refuse(400, b"codec must be json or binary")
        token = (query.get("token") or [""])[0]
        header = _header(request, "authorization")
        if not token and header[:7].lower() == "bearer ":
            token = header[7:].strip()
        claims = None
        if token:
            claims = self.sessions.verify(token)
            if claims is None:
                return _refuse(401, b"invalid or expired token")
            known, user = self.sessions.cached(claims)
            if known and user is None:
                return _refuse(401, b"token revoked or account disabled")
            # Else signed in once connected: at once when known, else after reading the user's
            # state (the client's first frames wait for it; a refusal then closes with 4001).
        binary = None if codec == "" else codec in ("binary", "msgpack")
        listener = Connection(self, binary, claims)
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(), listener)

    def admit(self, conn: Connection) -> str | None:
        """Count a new connection; the reason it is refused, if it is."""
        if self.per_ip.get(conn.ip, 0) >= self.limits.connections_per_ip:
            return "too many connections from this address"
        if (
            conn.user_id is not None
            and self.per_user.get(conn.user_id, 0) >= self.limits.connections_per_user
        ):
            return "too many connections for this user"
        self.per_ip[conn.ip] = self.per_ip.get(conn.ip, 0) + 1
        if conn.user_id is not None:
            self.per_user[conn.user_id] = self.per_user.get(conn.user_id, 0) + 1
        self.connections.add(conn)
        return None

    def release(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        _decrement(self.per_ip, conn.ip)
        if conn.user_id is not None:
            _decrement(self.per_user, conn.user_id)

    def run_waiting(self, user_id: str) -> None:
        """Start the user's waiting commands while they have free slots, one connection at a
        time in turn (so one busy socket cannot starve the user's others)."""
        waiting = self.waiting.get(user_id)
        while waiting and self.commands_per_user.get(user_id, 0) < self.limits.commands_in_flight_per_user:
            conn = next(iter(waiting))
            del waiting[conn]
            if conn.backlog:
                conn.launch(*conn.backlog.popleft())
            if conn.backlog:
                waiting[conn] = None  # to the back of the line
        if not waiting:
            self.waiting.pop(user_id, None)

    def sign_in(self, conn: Connection, claims: Any) -> str:
        """Sign `conn` in with a token already checked live (or sign it in again, as the same
        user, with a fresh one); the user id."""
        if conn.user_id is not None and conn.user_id != claims.id:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "this connection is signed in as another user")
        if conn.user_id is None:
            if self.per_user.get(claims.id, 0) >= self.limits.connections_per_user:
                raise ProtocolError(
                    ErrorCode.AUTH_FAILED, "too many connections for this user", reason="connection_limit"
                )
            self.per_user[claims.id] = self.per_user.get(claims.id, 0) + 1
        conn.user_id = claims.id
        conn.keep_claims(claims)
        return str(claims.id)

    async def _revalidate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate_s)
            try:
                await self.revalidate()
            except Exception as exc:  # the store is unreachable: keep serving, try again next time
                log.warning("websocket sign-ins not revalidated", error=repr(exc))

    async def revalidate(self) -> int:
        """Read the live state of every signed-in connection's user now; close (4001) those whose
        token expired or whose sign-in no longer stands. The number closed."""
        signed = [(c, c.claims) for c in self.connections if c.claims is not None and not c.closed]
        if not signed:
            return 0
        valid = await self.sessions.still_valid([claims for _, claims in signed])
        now = time.time()
        closed = 0
        for (conn, claims), ok in zip(signed, valid, strict=True):
            if conn.closed or conn.claims is not claims:  # gone, or signed in again meanwhile
                continue
            if now >= claims.expires_at:
                conn.sign_out("token expired")
            elif not ok:
                conn.sign_out("token revoked or account disabled")
            else:
                continue
            closed += 1
        return closed


_PICOWS_LOGGER = logging.getLogger("picows.server")


class _Handshake:
    """One connection before its upgrade: counted in `Gateway.handshaking` and timed from the TCP
    connection until its upgrade request's headers are in (picows then calls the listener
    factory), or until it closes first. Past `timeout_s` it is closed."""

    __slots__ = ("counts", "ip", "timeout_s", "timer")

    def __init__(self, counts: PerIpConnections, timeout_s: float) -> None:
        self.counts = counts
        self.timeout_s = timeout_s
        self.ip: str | None = None
        self.timer: asyncio.TimerHandle | None = None

    def begin(self, transport: Any) -> bool:
        """Count and time the connection; False if its address has too many handshakes."""
        ip = peer_ip(transport)
        if not self.counts.admit(ip):
            return False
        self.ip = ip
        if self.timeout_s > 0:
            self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, transport)
        return True

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ip is not None:
            self.counts.release(self.ip)
            self.ip = None

    def _expire(self, transport: Any) -> None:
        self.timer = None
        metrics.CONNECTIONS_CLOSED.labels("ws", "header_timeout").inc()
        transport.close()

    def listener_factory(self, route: Callable[[WSUpgradeRequest], Any]) -> Callable[[WSUpgradeRequest], Any]:
        def factory(request: WSUpgradeRequest) -> Any:
            self.end()
            return route(request)

        return factory


class _GuardedWSProtocol(WSProtocol):  # type: ignore[misc]
    """picows' server protocol with `_Handshake`'s limits: a connection from an address that
    already has `handshakes_per_ip` connections waiting for their upgrade is closed at once."""

    _handshake: _Handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # picows sets up every connection, refused ones too: its callbacks must find it ready.
        super().connection_made(transport)
        if not self._handshake.begin(transport):
            metrics.CONNECTIONS_CLOSED.labels("ws", "per_ip_limit").inc()
            # Not from inside connection_made: aiofastnet (1.2) registers the socket's reader just
            # after this call returns, and would leave it registered on the closed descriptor,
            # whose number the next accepted socket reuses.
            asyncio.get_running_loop().call_soon(transport.abort)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake.end()
        super().connection_lost(exc)


async def _create_server(protocol_factory: Callable[[], Any], **kwargs: Any) -> asyncio.Server:
    """`loop.create_server`, or aiofastnet's when it is installed (as picows itself chooses)."""
    loop = asyncio.get_running_loop()
    try:
        import aiofastnet
    except ImportError:
        return await loop.create_server(protocol_factory, **kwargs)
    server: asyncio.Server = await aiofastnet.create_server(loop, protocol_factory, **kwargs)
    return server


def _refuse(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    """An HTTP error answer to the upgrade request (no WebSocket is opened)."""
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, body), None)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _header(request: WSUpgradeRequest, name: str) -> str:
    value = request.headers.get(name)
    return "" if value is None else str(value)


class Connection(WSListener):
    """One client. `binary` is None until the first frame decides the codec (unless the URL did)."""

    def __init__(self, gateway: Gateway, binary: bool | None, claims: Any = None) -> None:
        super().__init__()
        self.gateway = gateway
        self.user_id: str | None = None  # once signed in
        self.claims: Any = None  # the signed-in token's (`TokenClaims`)
        self._upgrade_claims = claims  # the token given on the upgrade request, signed in once connected
        self._expiry: asyncio.TimerHandle | None = None
        # Frames received while a sign-in is being checked, handled after it (None: not checking).
        self._held: list[tuple[bool, bytes]] | None = None
        self._auth_task: asyncio.Task[None] | None = None
        self.binary: bool = bool(binary)
        self._codec_fixed = binary is not None
        self.transport: WSTransport | None = None
        self._raw: Any = None  # the TCP transport under the WebSocket (its unsent-bytes count)
        self._buffer_limit = gateway.limits.outbound_buffer_bytes_max
        self.ip = "?"
        self.subscriptions: dict[str, str] = {}  # client name -> topic key
        self.inflight: set[asyncio.Task[None]] = set()
        # Commands read but waiting for one of the user's slots: (type, body, request id, binary).
        self.backlog: deque[tuple[int, dict[str, Any], Any, bool]] = deque()
        self.closed = False

    # ---- picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._raw = transport.underlying_transport
        # Flow control as the slow-consumer policy: past `high` unsent bytes the transport calls
        # pause_writing, which cuts the connection.
        self._raw.set_write_buffer_limits(high=self._buffer_limit, low=self._buffer_limit // 2)
        peer = transport.underlying_transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "?"
        refused = self.gateway.admit(self)
        if refused is not None:
            metrics.WS_DISCONNECTS.labels("connection_limit").inc()
            self.closed = True
            transport.send_close(WSCloseCode.POLICY_VIOLATION, refused.encode())
            transport.disconnect()
            return
        metrics.WS_CONNECTIONS.labels(self._codec_name()).inc()
        if self._upgrade_claims is not None:
            claims, self._upgrade_claims = self._upgrade_claims, None
            self._auth_claims(claims, self._upgrade_signed_in)

    def _upgrade_signed_in(self, _user_id: str | None, exc: ProtocolError | None) -> None:
        if exc is None:
            return
        if exc.reason == "connection_limit":
            metrics.WS_DISCONNECTS.labels("connection_limit").inc()
            self.close(WSCloseCode.POLICY_VIOLATION, exc.msg)
        elif exc.code == ErrorCode.UNAVAILABLE:
            self.close(WSCloseCode.TRY_AGAIN_LATER, exc.msg)
        else:
            self.sign_out(exc.msg)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self in self.gateway.connections:
            metrics.WS_CONNECTIONS.labels(self._codec_name()).dec()
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        for key in self.subscriptions.values():
            self.gateway.registry.unsubscribe(key, self)
        self.subscriptions.clear()
        self.gateway.release(self)
        if self.backlog:  # never started: nobody is left to answer
            self.backlog.clear()
            self.gateway.waiting.get(self.user_id or "", {}).pop(self, None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if kind == WSMsgType.CONTINUATION or (kind in (WSMsgType.TEXT, WSMsgType.BINARY) and not frame.fin):
            self.close(WSCloseCode.UNSUPPORTED_DATA, "fragmented messages are not supported")
            return
        if kind not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return  # ping/pong are answered by picows
        if not self._codec_fixed:
            self._fix_codec(kind == WSMsgType.BINARY)
        payload = frame.get_payload_as_bytes()
        if self._held is not None:  # a sign-in is being checked: this frame is handled after it
            if len(self._held) >= HELD_FRAMES_MAX:
                self.close(WSCloseCode.POLICY_VIOLATION, "too many messages while signing in")
                return
            self._held.append((kind == WSMsgType.BINARY, payload))
            return
        self._dispatch(kind == WSMsgType.BINARY, payload)

    def _dispatch(self, binary: bool, payload: bytes) -> None:
        if binary:
            self._on_binary(payload)
        else:
            self._on_json(payload)

    # ---- signing in --------------------------------------------------------------------------

    def _auth(self, token: Any, done: Callable[[str | None, ProtocolError | None], None]) -> None:
        """Sign in with `token` (AUTH); `done(user id, None)` or `done(None, error)`."""
        claims = self.gateway.sessions.verify(token) if isinstance(token, str) and token else None
        if claims is None:
            done(None, ProtocolError(ErrorCode.AUTH_FAILED, "invalid or expired token"))
            return
        self._auth_claims(claims, done)

    def _auth_claims(self, claims: Any, done: Callable[[str | None, ProtocolError | None], None]) -> None:
        """At once when the user's live state is in memory; else after reading it, holding the
        client's next frames until then so that they are handled in order (a SUBSCRIBE to
        `account` right after AUTH finds the connection signed in)."""
        known, user = self.gateway.sessions.cached(claims)
        if known:
            self._finish_auth(claims, user, done)
            return
        self._held = []
        self._auth_task = asyncio.get_running_loop().create_task(self._auth_live(claims, done))

    async def _auth_live(self, claims: Any, done: Callable[[str | None, ProtocolError | None], None]) -> None:
        try:
            user = await self.gateway.sessions.check(claims)
        except Exception as exc:
            log.warning("websocket sign-in not checked", error=repr(exc))
            done(None, ProtocolError(ErrorCode.UNAVAILABLE, "the sign-in cannot be checked now; try again"))
        else:
            self._finish_auth(claims, user, done)
        finally:
            self._auth_task = None
            held, self._held = self._held, None
            for i, (binary, payload) in enumerate(held or ()):
                if self.closed:
                    break
                self._dispatch(binary, payload)
                if self._held is not None:  # that frame began another sign-in: the rest waits for it
                    self._held = held[i + 1 :] if held else []
                    break

    def _finish_auth(
        self, claims: Any, user: Any, done: Callable[[str | None, ProtocolError | None], None]
    ) -> None:
        if self.closed:
            return
        if user is None:
            error = ProtocolError(
                ErrorCode.AUTH_FAILED, "token revoked or account disabled", reason="token_revoked"
            )
            done(None, error)
            return
        try:
            user_id = self.gateway.sign_in(self, claims)
        except ProtocolError as exc:
            done(None, exc)
            return
        done(user_id, None)

    def keep_claims(self, claims: Any) -> None:
        """The token this connection is signed in with now: it is closed when that one expires."""
        self.claims = claims
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, claims.expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self.sign_out, "token expired")

    def sign_out(self, reason: str) -> None:
        """Close with 4001: the client signs in again (a new connection with a fresh token)."""
        if self.closed:
            return
        metrics.WS_DISCONNECTS.labels("signed_out").inc()
        self.close(CLOSE_SIGNED_OUT, reason)

    # ---- requests ----------------------------------------------------------------------------

    def _fix_codec(self, binary: bool) -> None:
        metrics.WS_CONNECTIONS.labels(self._codec_name()).dec()
        self.binary = binary
        self._codec_fixed = True
        metrics.WS_CONNECTIONS.labels(self._codec_name()).inc()

    def _on_json(self, payload: bytes) -> None:
        request_id: Any = None
        try:
            request = parse_json(payload)
            request_id = request.id
            method = request.method.upper()
            if method == "AUTH":
                self._auth(
                    request.params[0] if request.params else None,
                    functools.partial(self._json_auth_done, request_id),
                )
                return
            command = _JSON_COMMANDS.get(method)
            if command is not None:
                body = request.params[0] if len(request.params) == 1 else None
                if not isinstance(body, dict):
                    raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{method} takes one object: params [{{...}}]")
                self._start_command(command, body, request_id, binary=False)
                return
            result = self._handle(method, request.params)
        except ProtocolError as exc:
            self._send(json_error(request_id, exc.code, exc.msg, **_reason(exc)), binary=False)
            return
        self._send(json_result(request_id, result), binary=False)

    def _json_auth_done(self, request_id: Any, user_id: str | None, exc: ProtocolError | None) -> None:
        if exc is not None:
            self._send(json_error(request_id, exc.code, exc.msg, **_reason(exc)), binary=False)
        else:
            self._send(json_result(request_id, user_id), binary=False)

    def _binary_auth_done(self, sequence: int, user_id: str | None, exc: ProtocolError | None) -> None:
        if exc is None:
            self._send(binary_frame(MsgType.AUTH_SUCCESS, _now_ms(), sequence, {"userId": user_id}), True)
        elif exc.code == ErrorCode.AUTH_FAILED:
            self._send(binary_frame(MsgType.AUTH_FAILURE, _now_ms(), sequence, {"msg": exc.msg}), True)
        else:
            self._binary_error(exc, MsgType.AUTH, sequence)

    def _binary_error(self, exc: ProtocolError, msg_type: int, sequence: int) -> None:
        error = {"code": int(exc.code), "msg": exc.msg, "requestType": msg_type, **_reason(exc)}
        self._send(binary_frame(MsgType.ERROR, _now_ms(), sequence, error), True)

    def _start_command(self, kind: int, body: dict[str, Any], request_id: Any, *, binary: bool) -> None:
        """Commands wait for the engine: run them as tasks, answered when done (in any order;
        the reply carries the request's id or sequence). A connection has at most
        `commands_in_flight_per_connection` commands running or waiting; over it, the command is
        refused. A user has at most `commands_in_flight_per_user` running over all their
        connections; more wait (in order, per connection) until one of theirs is done: the client
        gets no answer to spin on."""
        try:
            if self.gateway.commands is None:
                raise ProtocolError(ErrorCode.UNKNOWN_METHOD, "commands are not served here")
            if self.user_id is None:
                raise ProtocolError(ErrorCode.AUTH_REQUIRED, "sign in first (AUTH)")
            limit = self.gateway.limits.commands_in_flight_per_connection
            if len(self.inflight) + len(self.backlog) >= limit:
                raise ProtocolError(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {limit} commands in flight on this connection",
                    reason="too_many_in_flight",
                )
        except ProtocolError as exc:
            self._reply_error(exc, kind, request_id, binary)
            return
        per_user = self.gateway.commands_per_user.get(self.user_id, 0)
        if self.backlog or per_user >= self.gateway.limits.commands_in_flight_per_user:
            self.backlog.append((kind, body, request_id, binary))
            self.gateway.waiting.setdefault(self.user_id, {})[self] = None
            return
        self.launch(kind, body, request_id, binary)

    def launch(self, kind: int, body: dict[str, Any], request_id: Any, binary: bool) -> None:
        """Run one command now, in one of the connection's and one of the user's slots."""
        assert self.user_id is not None
        per_user = self.gateway.commands_per_user
        per_user[self.user_id] = per_user.get(self.user_id, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run_command(kind, body, request_id, binary))
        self.inflight.add(task)
        task.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task[Any] | None) -> None:
        """Free the command's slots (once: at its answer, or when its task ends without one),
        and start the user's next waiting command."""
        if task in self.inflight:
            self.inflight.discard(task)
            assert self.user_id is not None
            _decrement(self.gateway.commands_per_user, self.user_id)
            self.gateway.run_waiting(self.user_id)

    async def _run_command(self, kind: int, body: dict[str, Any], request_id: Any, binary: bool) -> None:
        assert self.gateway.commands is not None and self.user_id is not None
        try:
            try:
                await self._check_signed_in()
                reply_type, data = await self.gateway.commands(self.user_id, kind, dict(body))
            finally:
                # Before the answer goes out: a client that sends its next command on receiving
                # it must find the slot free (else keeping exactly the limit in flight is refused).
                self._command_done(asyncio.current_task())
        except ProtocolError as exc:
            self._reply_error(exc, kind, request_id, binary)
            return
        except Exception as exc:  # never let one command take the connection down
            log.error("websocket command failed", error=repr(exc), kind=kind)
            self._reply_error(
                ProtocolError(ErrorCode.UNAVAILABLE, "internal error"), kind, request_id, binary
            )
            return
        if binary:
            payload = {"requestType": kind, "data": data}
            self._send(binary_frame(reply_type, _now_ms(), request_id, payload), True)
        else:
            self._send(json_result(request_id, data), False)

    async def _check_signed_in(self) -> None:
        """A command runs only while the token stands (expiry, and the user's live state, at most
        the store's state TTL old); else it is refused and the connection closed (4001)."""
        claims = self.claims
        if claims is None:
            raise ProtocolError(ErrorCode.AUTH_REQUIRED, "sign in first (AUTH)")
        code = "token_expired"
        if time.time() >= claims.expires_at:
            reason = "token expired"
        else:
            try:
                user = await self.gateway.sessions.check(claims)
            except Exception as exc:
                log.warning("websocket sign-in not checked", error=repr(exc))
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the sign-in cannot be checked now") from None
            if user is not None:
                return
            reason, code = "token revoked or account disabled", "token_revoked"
        asyncio.get_running_loop().call_soon(self.sign_out, reason)  # after the error reply
        raise ProtocolError(ErrorCode.AUTH_FAILED, reason, reason=code)

    def _reply_error(self, exc: ProtocolError, kind: int, request_id: Any, binary: bool) -> None:
        if binary:
            self._binary_error(exc, kind, request_id)
        else:
            self._send(json_error(request_id, exc.code, exc.msg, **_reason(exc)), False)

    def _on_binary(self, payload: bytes) -> None:
        sequence = 0
        msg_type = 0
        try:
            msg_type, sequence, body = parse_binary(payload)
            if msg_type == MsgType.AUTH:
                self._auth(body.get("token"), functools.partial(self._binary_auth_done, sequence))
                return
            if msg_type in _COMMANDS:
                self._start_command(msg_type, body, sequence, binary=True)
                return
            method = _BINARY_METHODS.get(msg_type)
            if method is None:
                raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown message type 0x{msg_type:02x}")
            params = [body["topic"]] if "topic" in body else []
            result = self._handle(method, params)
        except ProtocolError as exc:
            sequence = sequence or exc.sequence
            msg_type = msg_type or exc.msg_type
            if msg_type == MsgType.AUTH and exc.code == ErrorCode.AUTH_FAILED:
                self._send(binary_frame(MsgType.AUTH_FAILURE, _now_ms(), sequence, {"msg": exc.msg}), True)
                return
            self._binary_error(exc, msg_type, sequence)
            return
        self._send(
            binary_frame(MsgType.RESULT, _now_ms(), sequence, {"requestType": msg_type, "result": result}),
            True,
        )

    def _handle(self, method: str, params: list[Any]) -> Any:
        registry = self.gateway.registry
        if method == "SUBSCRIBE":
            names = _names(params)
            keys = [registry.key_for(name, self.user_id) for name in names]
            new = [n for n in names if n not in self.subscriptions]
            if len(self.subscriptions) + len(new) > self.gateway.limits.subscriptions_per_connection:
                limit = self.gateway.limits.subscriptions_per_connection
                raise ProtocolError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {limit} subscriptions")
            for name, key in zip(names, keys, strict=True):
                if name not in self.subscriptions:
                    self.subscriptions[name] = key
                    registry.subscribe(key, self)  # sends the last message (or the snapshot) at once
            return None
        if method == "UNSUBSCRIBE":
            for name in _names(params):
                if name in self.subscriptions:
                    registry.unsubscribe(self.subscriptions.pop(name), self)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return sorted(self.subscriptions)
        raise ProtocolError(ErrorCode.UNKNOWN_METHOD, f"unknown method {method!r}")

    # ---- sending -----------------------------------------------------------------------------

    def deliver(self, frame: bytes) -> bool:
        """One frame of a topic (a last message, a snapshot), sent now. True if sent."""
        if self.closed or self.transport is None:
            return False
        self.transport.send(WSMsgType.BINARY if self.binary else WSMsgType.TEXT, frame)
        return True

    def sender(self) -> Callable[[bytes], Any]:
        """The fan-out's per-subscriber call: the transport's own send, bound to the codec's
        frame type. No check per send: the transport tells `pause_writing` when this client's
        unsent bytes pass the limit, and the connection is cut (and unsubscribed) then."""
        assert self.transport is not None
        return functools.partial(self.transport.send, WSMsgType.BINARY if self.binary else WSMsgType.TEXT)

    def pause_writing(self) -> None:
        # Called by the transport from inside a send: cut the connection once that send is over.
        if not self.closed:
            asyncio.get_running_loop().call_soon(self._cut_slow)

    def resume_writing(self) -> None:
        pass

    def _cut_slow(self) -> None:
        if self.closed:
            return
        metrics.WS_DISCONNECTS.labels("slow_consumer").inc()
        self.close(WSCloseCode.TRY_AGAIN_LATER, "slow consumer: too many unsent bytes")

    def _send(self, frame: bytes, binary: bool) -> None:
        """A reply (not a topic message)."""
        if self.closed or self.transport is None:
            return
        self.transport.send(WSMsgType.BINARY if binary else WSMsgType.TEXT, frame)
        count_sent(binary, 1, len(frame))

    def close(self, code: WSCloseCode, reason: str) -> None:
        if self.closed or self.transport is None:
            return
        self.closed = True
        # Unsubscribe now: a slow consumer must stop costing the fan-out at once.
        for key in self.subscriptions.values():
            self.gateway.registry.unsubscribe(key, self)
        self.subscriptions.clear()
        log.info("closing websocket", code=code.value, reason=reason, ip=self.ip, user=self.user_id)
        transport = self.transport
        transport.send_close(code, reason.encode()[:120])
        # The close frame queues behind what is still unsent: close after the flush, so the client
        # reads the reason, but never wait longer than CLOSE_FLUSH_TIMEOUT_S (the buffer no longer
        # grows: nothing is queued after the close frame).
        transport.disconnect(graceful=True)
        asyncio.get_running_loop().call_later(CLOSE_FLUSH_TIMEOUT_S, _abort, transport)

    def _codec_name(self) -> str:
        return "binary" if self.binary else "json"


_BINARY_METHODS: Final[dict[int, str]] = {
    MsgType.SUBSCRIBE_ROUND: "SUBSCRIBE",
    MsgType.UNSUBSCRIBE_ROUND: "UNSUBSCRIBE",
    MsgType.LIST_SUBSCRIPTIONS: "LIST_SUBSCRIPTIONS",
}


_COMMANDS: Final = frozenset({MsgType.OPEN_POSITION, MsgType.CLOSE_POSITION, MsgType.GET_BALANCE})
_JSON_COMMANDS: Final[dict[str, int]] = {
    "OPEN_POSITION": MsgType.OPEN_POSITION,
    "CLOSE_POSITION": MsgType.CLOSE_POSITION,
    "GET_BALANCE": MsgType.GET_BALANCE,
}


def _reason(exc: ProtocolError) -> dict[str, Any]:
    """The optional fields of an error reply: `reason`, and `retryAfterMs` when rate limited or
    when a dependency is down (UNAVAILABLE, reason dependency_unavailable)."""
    extra: dict[str, Any] = {"reason": exc.reason} if exc.reason else {}
    if exc.code == ErrorCode.RATE_LIMITED or exc.retry_after_ms:
        extra["retryAfterMs"] = exc.retry_after_ms
    return extra


def _names(params: list[Any]) -> list[str]:
    if not params or not all(isinstance(p, str) for p in params):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "params must be a non-empty list of topic names")
    return list(dict.fromkeys(params))


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


__all__ = ["PROTOCOL_VERSION", "WS_PATH", "Connection", "Gateway", "GatewayLimits", "gateway_limits"]

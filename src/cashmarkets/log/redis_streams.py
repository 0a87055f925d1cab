"""The distributed command log: a `CommandLog` on one Redis Stream.

Each record is one stream entry with a field `d` holding the encoded command bytes; the entry id
Redis assigns (`<ms>-<seq>`, strictly increasing) is the record's position. Entries written by this
version also carry `t`: the record's time is its entry id's milliseconds (Redis's clock, never
decreasing within a stream), not whatever the appending host stamped into the command (decision
022). Entries without `t` (older logs) keep the time inside the command.

Durability
----------
`append` returns once Redis has acknowledged the batch. That is only the "durable, no loss"
promise of `CommandLog` when Redis runs with

    appendonly yes
    appendfsync always

so every write is fsynced to the AOF before the reply is sent. With `appendfsync everysec` (the
Redis default once AOF is on) up to about one second of acknowledged commands can be lost on a
Redis or host crash; with `appendonly no` everything since the last RDB save can be. Replication
is asynchronous too: a failover to a replica can lose acknowledged writes. `durability_warning()`
checks the two settings at startup.

A failed `append` (connection dropped, reply timed out) has an unknown outcome: the batch may or
may not be in the stream. For that reason the log never retries a write by itself (a retried
XADD after a lost reply would append the batch twice): the pool it builds has retries off, and a
client passed in must have them off as well. Callers resolve the doubt by reading the tail.

Trimming
--------
`trim_below` drops entries exactly (XTRIM MINID, not `~`). Callers must only ever trim below the
position of the newest durable snapshot; this class cannot know where that is.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cashmarkets.log.base import APPEND_BATCH_RECORDS_MAX, LogCorrupted, LogRecord, Position

__all__ = ["RedisStreamLog", "RedisUnavailable"]

DATA_FIELD = b"d"
REPLY_FIELD = b"r"
# Present (empty) on entries whose time is their entry id's: see the module docstring.
TIME_FIELD = b"t"

# redis-py 8's default socket (read) timeout, used when a passed-in client does not say.
_REDIS_PY_DEFAULT_SOCKET_TIMEOUT_S = 5.0


class RedisUnavailable(ConnectionError):
    """Redis could not be reached (or refused us) when the log was opened."""


def _redact(url: str) -> str:
    """The URL without its password, fit for an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamLog:
    """`CommandLog` backed by the Redis Stream `stream`."""

    def __init__(
        self,
        url: str,
        stream: str = "cashmarkets:log",
        *,
        client: redis.asyncio.Redis | None = None,
    ) -> None:
        self._url = url
        self._stream = stream
        self._closed = False
        self._pool: redis.asyncio.BlockingConnectionPool | None
        if client is None:
            self._pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=16,
                timeout=5,  # seconds to wait for a free pooled connection
                socket_connect_timeout=5,
                socket_timeout=5,
                retry=Retry(NoBackoff(), 0),  # never retry a write: see the module docstring
                decode_responses=False,
            )
            self._client = redis.asyncio.Redis(connection_pool=self._pool)
        else:
            self._pool = None
            self._client = client
        kwargs = self._client.connection_pool.connection_kwargs
        if kwargs.get("decode_responses", False):
            raise ValueError("RedisStreamLog needs a client with decode_responses=False (records are bytes)")
        retry = self._client.get_retry()
        if retry is not None and retry.get_retries() > 0:
            raise ValueError(
                "RedisStreamLog needs a client that does not retry commands "
                "(e.g. retry=Retry(NoBackoff(), 0)): a retried XADD after a lost reply appends twice"
            )
        socket_timeout = kwargs.get("socket_timeout", _REDIS_PY_DEFAULT_SOCKET_TIMEOUT_S)
        # XREAD BLOCK longer than the socket read timeout would fail with TimeoutError, so
        # read_blocking blocks in slices that end comfortably before it.
        self._block_slice_ms: int | None = (
            None if socket_timeout is None else max(1, int(float(socket_timeout) * 1000 * 0.8))
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._client.ping()
            kind = _text(await self._client.type(self._stream))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise RedisUnavailable(
                f"cannot reach Redis at {_redact(self._url)} for command log stream {self._stream!r}: "
                f"{exc}. Is redis-server running and the URL right?"
            ) from exc
        if kind not in ("none", "stream"):
            raise LogCorrupted(f"Redis key {self._stream!r} holds a {kind}, not a stream")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:  # a passed-in client belongs to the caller
            await self._client.aclose()
            await self._pool.aclose()

    # -- CommandLog -----------------------------------------------------------------------------

    async def append(self, records: Sequence[bytes], reply_to: str | None = None) -> list[Position]:
        """Append records; with `reply_to`, the engine publishes each result on that channel."""
        if not records:
            return []
        if len(records) > APPEND_BATCH_RECORDS_MAX:
            raise ValueError(f"batch of {len(records)} records exceeds {APPEND_BATCH_RECORDS_MAX}")
        for record in records:
            if not isinstance(record, bytes | bytearray | memoryview):
                raise TypeError(f"records must be bytes, got {type(record).__name__}")
        # MULTI/EXEC rather than a plain pipeline; it costs the same single round trip. The batch
        # then lands as one unit: no other writer's entries interleave with it, a connection
        # dropped mid-send leaves nothing (an unterminated MULTI is discarded), and the AOF holds
        # it wrapped in MULTI/EXEC so a crash mid-write replays all of it or none. Redis does not
        # roll back a transaction on a runtime error, but XADD `*` to one key can only fail
        # uniformly (WRONGTYPE for every command) or be refused at queue time (OOM -> EXECABORT).
        async with self._client.pipeline(transaction=True) as pipe:
            for record in records:
                fields = {DATA_FIELD: bytes(record), TIME_FIELD: b""}
                if reply_to is not None:
                    fields[REPLY_FIELD] = reply_to.encode()
                pipe.xadd(self._stream, fields, id="*")  # type: ignore[arg-type]
            ids: list[bytes | str] = await pipe.execute()
        return [_text(entry_id) for entry_id in ids]

    async def read_from(self, after: Position | None, limit: int) -> list[LogRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        start = "-" if after is None else f"({after}"
        entries = await self._client.xrange(self._stream, min=start, max="+", count=limit)
        return self._records(entries)

    async def read_blocking(self, after: Position | None, limit: int, block_ms: int) -> list[LogRecord]:
        """Like `read_from`, but wait up to `block_ms` (0 = forever) for a record to arrive.

        Returns [] when the time runs out with nothing new.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if block_ms < 0:
            raise ValueError(f"block_ms must be >= 0, got {block_ms}")
        start = "0-0" if after is None else after
        loop = asyncio.get_running_loop()
        slice_ms = self._block_slice_ms
        forever = block_ms == 0
        deadline = loop.time() + block_ms / 1000
        while True:
            if forever:
                wait_ms = 0 if slice_ms is None else slice_ms  # BLOCK 0 waits forever
            else:
                remaining_ms = math.ceil((deadline - loop.time()) * 1000)
                if remaining_ms <= 0:
                    return []
                wait_ms = remaining_ms if slice_ms is None else min(remaining_ms, slice_ms)
            try:
                response = await self._client.xread({self._stream: start}, count=limit, block=wait_ms)
            except (redis.exceptions.TimeoutError, TimeoutError):
                # The reply of a blocking read came later than the socket timeout (a stalled event
                # loop, a slow host): the client dropped that connection, and a read is safe to
                # repeat, so go round again rather than fail the caller.
                continue
            records = self._records(self._xread_entries(response))
            if records:
                return records

    async def has_record(self, position: Position) -> bool:
        """Whether the entry at `position` is (still) in the stream."""
        entries = await self._client.xrange(self._stream, min=position, max=position, count=1)
        return bool(entries)

    async def last_position(self) -> Position | None:
        entries = await self._client.xrevrange(self._stream, max="+", min="-", count=1)
        if not entries:
            return None
        entry_id, _fields = entries[0]
        if entry_id is None:
            raise LogCorrupted(f"stream {self._stream!r} returned an entry without an id")
        return _text(entry_id)

    async def trim_below(self, position: Position) -> int:
        trimmed: int = await self._client.xtrim(self._stream, minid=position, approximate=False)
        return trimmed

    def record_time_ns(self, position: Position) -> int | None:
        return entry_time_ns(position)  # append marks every entry with TIME_FIELD

    # -- operations -----------------------------------------------------------------------------

    async def durability_warning(self) -> str | None:
        """A message when Redis is not set up for no-loss (appendonly yes, appendfsync always).

        None when it is, or when the server does not let us run CONFIG GET.
        """
        try:
            config = await self._client.config_get("append*")
        except redis.exceptions.ResponseError:  # CONFIG renamed away, or an ACL denies it
            return None
        settings = {_text(k): _text(v) for k, v in config.items() if k is not None and v is not None}
        appendonly = settings.get("appendonly", "?")
        appendfsync = settings.get("appendfsync", "?")
        if appendonly == "yes" and appendfsync == "always":
            return None
        return (
            f"Redis runs with appendonly={appendonly} appendfsync={appendfsync}; the command log needs "
            "appendonly=yes and appendfsync=always to keep every acknowledged command. As configured, "
            + (
                "about the last second of acknowledged commands can be lost on a crash."
                if appendonly == "yes" and appendfsync == "everysec"
                else "acknowledged commands can be lost on a crash."
            )
        )

    # -- parsing --------------------------------------------------------------------------------

    @staticmethod
    def _xread_entries(response: Any) -> list[Any]:
        """The entries of our one stream from an XREAD reply (RESP2 list or RESP3 map)."""
        if not response:
            return []
        if isinstance(response, Mapping):  # RESP3: {stream: [entries]}
            return [entry for batch in response.values() for entry in batch[0]]
        return [entry for _stream, batch in response for entry in batch]  # RESP2: [[stream, entries]]

    def _records(self, entries: Sequence[Any] | None) -> list[LogRecord]:
        records: list[LogRecord] = []
        for entry_id, fields in entries or ():
            data = fields.get(DATA_FIELD) if fields else None
            if entry_id is None or not isinstance(data, bytes):
                raise LogCorrupted(
                    f"stream {self._stream!r} entry {_text(entry_id)} has no {DATA_FIELD.decode()!r} field"
                )
            reply = fields.get(REPLY_FIELD)
            position = _text(entry_id)
            records.append(
                LogRecord(
                    position=position,
                    data=data,
                    reply_to=reply.decode() if reply else None,
                    log_ts_ns=entry_time_ns(position) if TIME_FIELD in fields else None,
                )
            )
        return records


def entry_time_ns(entry_id: str) -> int:
    """The time Redis gave a stream entry: its id's milliseconds part, in ns."""
    return int(entry_id.partition("-")[0]) * 1_000_000

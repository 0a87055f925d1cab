"""How far the SQL projection is behind the engine, in milliseconds, for `/ready` and the
`X-Projection-Lag-Ms` header of reads.

Lag, precisely: the time since the engine was first seen at a seq that the projection has not
committed yet; 0 when the projection's checkpoint is at or past the engine's seq. The engine's seq
is sampled once per heartbeat (PROJECTOR_HEARTBEAT_S), so the lag is rounded down to that period
(a record applied between two samples counts from the sample that first saw it).

    distributed  the projector publishes a heartbeat `<stream>:projector:alive` (ProjectorBeat,
                 renewed every second, expiring after PROJECTOR_HEARTBEAT_TTL_S) next to the
                 engine's; API processes read it. No key: no projector (dead, or none holds the
                 lease), and the API is not ready.
    embedded     the API process itself compares its engine's seq with the projector's checkpoint
                 row (the projector is its child, decision 009, or a task of it).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog

log = structlog.get_logger("cashmarkets.projection")

PROJECTOR_HEARTBEAT_S: Final = 1.0
PROJECTOR_HEARTBEAT_TTL_S: Final = 3
# Engine seq samples kept while the projection is behind: at one per second, ten minutes of lag
# can be told apart; past that the lag is reported as at least that long.
SAMPLES_MAX: Final = 600
_NS_PER_MS: Final = 1_000_000


def projector_alive_key(stream: str) -> str:
    """Next to `engine_alive_key`: the acting projector's ProjectorBeat (MessagePack)."""
    return f"{stream}:projector:alive"


class ProjectorBeat(msgspec.Struct, frozen=True):
    seq: int  # the projector's committed checkpoint
    engine_seq: int  # the engine's seq as last seen (0: never seen)
    lag_ms: int
    at_ns: int  # wall time of this beat


class LagTracker:
    """Samples of (engine seq, when first seen) the projection has not reached yet."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[int, int]] = collections.deque()
        self.engine_seq = 0

    def observe(self, engine_seq: int | None, projected_seq: int, now_ns: int) -> int:
        """Record one sample (`engine_seq` None: the engine was not seen) and return the lag, ms."""
        if engine_seq is not None:
            self.engine_seq = max(self.engine_seq, engine_seq)
            newest = self._samples[-1][0] if self._samples else projected_seq
            if engine_seq > newest and len(self._samples) < SAMPLES_MAX:
                self._samples.append((engine_seq, now_ns))
        while self._samples and self._samples[0][0] <= projected_seq:
            self._samples.popleft()
        if not self._samples:
            return 0
        return max(0, (now_ns - self._samples[0][1]) // _NS_PER_MS)


async def publish_heartbeat(
    client: Any,
    stream: str,
    projector: Any,
    engine_seq: Callable[[], Awaitable[int | None]],
) -> None:
    """Distributed projector: publish a ProjectorBeat every PROJECTOR_HEARTBEAT_S while this
    projector holds the lease (a standby publishes nothing). Runs beside the projector's loop, so
    a projector stuck on its store still reports its growing lag."""
    key = projector_alive_key(stream)
    tracker = LagTracker()
    encode = msgspec.msgpack.encode
    while True:
        try:
            if projector.term is not None:
                now = time.time_ns()
                lag_ms = tracker.observe(await engine_seq(), projector.seq, now)
                beat = ProjectorBeat(projector.seq, tracker.engine_seq, lag_ms, now)
                await client.set(key, encode(beat), ex=PROJECTOR_HEARTBEAT_TTL_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down: no beat; API processes see none and say not ready
            log.debug("projector heartbeat not published", error=repr(exc))
        await asyncio.sleep(PROJECTOR_HEARTBEAT_S)


def start_heartbeat(
    client: Any, stream: str, projector: Any, engine_seq: Callable[[], Awaitable[int | None]]
) -> asyncio.Task[None] | None:
    """The projector process's heartbeat task (distributed: in Redis; none without Redis)."""
    if client is None:
        return None
    beat = publish_heartbeat(client, stream, projector, engine_seq)
    return asyncio.create_task(beat, name="projector-heartbeat")


class ProjectionHealth:
    """The API side: the projection's lag as last known, refreshed every PROJECTOR_HEARTBEAT_S by
    `run()` (for the read header) and on demand by `/ready`. `read()` is the source: it returns
    the lag in ms, or a reason (str) when there is no live projector to measure."""

    def __init__(self, read: Callable[[], Awaitable[int | str]], max_lag_ms: int) -> None:
        self._read = read
        self.max_lag_ms = max_lag_ms
        self.lag_ms: int | None = None  # None: unknown (no projector heartbeat)

    async def check(self) -> str:
        """ "ok", or why the projection cannot be trusted for reads now."""
        try:
            found = await self._read()
        except Exception:
            self.lag_ms = None
            raise
        if isinstance(found, str):
            self.lag_ms = None
            return found
        self.lag_ms = found
        if found > self.max_lag_ms:
            return f"projection {found} ms behind the engine (more than {self.max_lag_ms} ms)"
        return "ok"

    def header(self) -> tuple[bytes, bytes] | None:
        lag = self.lag_ms
        return None if lag is None else (b"x-projection-lag-ms", str(lag).encode())

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:
                log.debug("projection lag not read", error=repr(exc))
            await asyncio.sleep(PROJECTOR_HEARTBEAT_S)


def beat_reader(client: Any, stream: str) -> Callable[[], Awaitable[int | str]]:
    """Distributed API: the lag from the projector's heartbeat, aged by the beat's own age while
    it reports a lag (a beat is up to a second old)."""
    key = projector_alive_key(stream)
    decoder = msgspec.msgpack.Decoder(ProjectorBeat)

    async def read() -> int | str:
        raw = await client.get(key)
        if raw is None:
            return "no projector heartbeat"
        beat = decoder.decode(raw)
        if beat.lag_ms == 0:
            return 0
        return beat.lag_ms + max(0, (time.time_ns() - beat.at_ns) // _NS_PER_MS)

    return read


def local_reader(
    engine_seq: Callable[[], int],
    checkpoint_seq: Callable[[], Awaitable[int]],
    projector_alive: Callable[[], bool],
) -> Callable[[], Awaitable[int | str]]:
    """Embedded API: the lag from this process's engine and the projector's checkpoint row."""
    tracker = LagTracker()

    async def read() -> int | str:
        if not projector_alive():
            return "projector not running"
        seen = engine_seq()  # before the checkpoint: a checkpoint read later can only be fresher
        return tracker.observe(seen, await checkpoint_seq(), time.time_ns())

    return read

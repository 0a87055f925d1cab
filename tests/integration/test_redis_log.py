"""RedisStreamLog against the real Redis on 127.0.0.1:6379 (no mocks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cashmarkets.log.base import APPEND_BATCH_RECORDS_MAX, LogCorrupted, LogRecord
from cashmarkets.log.redis_streams import RedisStreamLog, RedisUnavailable, entry_time_ns

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def _id(position: str) -> tuple[int, int]:
    ms, seq = position.split("-")
    return int(ms), int(seq)


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"cashmarkets:test:log:{uuid.uuid4().hex}"
    yield name
    cleanup = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await cleanup.delete(name)
    finally:
        await cleanup.aclose()


@pytest.fixture
async def log(stream: str) -> AsyncIterator[RedisStreamLog]:
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    yield log
    await log.close()


@pytest.fixture
async def raw() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def _payloads(n: int, tag: str = "r") -> list[bytes]:
    # Include bytes that are not valid UTF-8 and a NUL, to prove the data round-trips untouched.
    return [f"{tag}{i}:".encode() + b"\x00\xff\xfe" + i.to_bytes(4, "big") for i in range(n)]


async def test_append_returns_one_increasing_id_per_record(log: RedisStreamLog) -> None:
    first = await log.append(_payloads(5, "a"))
    second = await log.append(_payloads(3, "b"))
    ids = first + second
    assert len(first) == 5 and len(second) == 3
    assert all(isinstance(p, str) for p in ids)
    assert [_id(p) for p in ids] == sorted({_id(p) for p in ids})  # strictly increasing, no dupes
    assert await log.append([]) == []


async def test_append_rejects_oversized_batch(log: RedisStreamLog) -> None:
    with pytest.raises(ValueError):
        await log.append([b"x"] * (APPEND_BATCH_RECORDS_MAX + 1))
    assert await log.last_position() is None


async def test_read_from_start_returns_all_in_order_with_exact_bytes(log: RedisStreamLog) -> None:
    payloads = [*_payloads(20), b""]
    ids = await log.append(payloads)
    records = await log.read_from(None, 100)
    expected = [LogRecord(p, d, log_ts_ns=entry_time_ns(p)) for p, d in zip(ids, payloads, strict=True)]
    assert records == expected


async def test_read_from_after_returns_only_later(log: RedisStreamLog) -> None:
    payloads = _payloads(10)
    ids = await log.append(payloads)
    records = await log.read_from(ids[4], 100)
    assert [r.position for r in records] == ids[5:]
    assert [r.data for r in records] == payloads[5:]
    assert await log.read_from(ids[-1], 100) == []


async def test_read_from_honours_limit(log: RedisStreamLog) -> None:
    ids = await log.append(_payloads(10))
    assert [r.position for r in await log.read_from(None, 3)] == ids[:3]
    assert [r.position for r in await log.read_from(ids[2], 4)] == ids[3:7]
    assert await log.read_from(None, 0) == []


async def test_paging_through_1000_records(log: RedisStreamLog) -> None:
    payloads = _payloads(1000)
    ids: list[str] = []
    for start in range(0, 1000, 250):
        ids += await log.append(payloads[start : start + 250])
    seen: list[LogRecord] = []
    after: str | None = None
    pages = 0
    while True:
        page = await log.read_from(after, 100)
        if not page:
            break
        assert len(page) <= 100
        pages += 1
        seen += page
        after = page[-1].position
    assert pages == 10
    assert [r.position for r in seen] == ids
    assert [r.data for r in seen] == payloads


async def test_last_position(log: RedisStreamLog) -> None:
    assert await log.last_position() is None
    ids = await log.append(_payloads(3))
    assert await log.last_position() == ids[-1]
    more = await log.append([b"z"])
    assert await log.last_position() == more[0]


async def test_trim_below_removes_only_older(log: RedisStreamLog) -> None:
    payloads = _payloads(10)
    ids = await log.append(payloads)
    assert await log.trim_below(ids[6]) == 6
    remaining = await log.read_from(None, 100)
    assert [r.position for r in remaining] == ids[6:]
    assert [r.data for r in remaining] == payloads[6:]
    # Reading after a trimmed position, or after the new first one, still works.
    assert [r.position for r in await log.read_from(ids[2], 100)] == ids[6:]
    assert [r.position for r in await log.read_from(ids[6], 100)] == ids[7:]
    assert await log.trim_below(ids[6]) == 0
    new = await log.append([b"after-trim"])
    after_trim = LogRecord(new[0], b"after-trim", log_ts_ns=entry_time_ns(new[0]))
    assert (await log.read_from(ids[-1], 10)) == [after_trim]
    assert await log.last_position() == new[0]


async def test_record_without_data_field_is_corruption(
    log: RedisStreamLog, raw: redis.asyncio.Redis, stream: str
) -> None:
    good = await log.append([b"ok"])
    await raw.xadd(stream, {"x": b"not-d"})
    with pytest.raises(LogCorrupted):
        await log.read_from(None, 10)
    with pytest.raises(LogCorrupted):
        await log.read_from(good[0], 10)
    with pytest.raises(LogCorrupted):
        await log.read_blocking(good[0], 10, block_ms=100)


async def test_read_blocking_returns_record_appended_while_blocked(log: RedisStreamLog) -> None:
    first = await log.append([b"before"])
    reader = asyncio.create_task(log.read_blocking(first[0], 10, block_ms=5000))
    await asyncio.sleep(0.2)
    assert not reader.done()  # really blocked, not returned early
    ids = await log.append([b"during"])
    records = await asyncio.wait_for(reader, timeout=5)
    assert records == [LogRecord(ids[0], b"during", log_ts_ns=entry_time_ns(ids[0]))]


async def test_read_blocking_on_empty_stream_from_start(log: RedisStreamLog) -> None:
    reader = asyncio.create_task(log.read_blocking(None, 10, block_ms=5000))
    await asyncio.sleep(0.2)
    ids = await log.append([b"one", b"two"])
    records = await asyncio.wait_for(reader, timeout=5)
    assert [r.position for r in records] == ids
    assert [r.data for r in records] == [b"one", b"two"]


async def test_read_blocking_times_out_empty(log: RedisStreamLog) -> None:
    ids = await log.append([b"x"])
    started = time.monotonic()
    assert await log.read_blocking(ids[0], 10, block_ms=150) == []
    assert 0.1 <= time.monotonic() - started < 2


async def test_read_blocking_longer_than_socket_timeout(stream: str) -> None:
    # A block longer than the client's socket read timeout must not surface as a TimeoutError.
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    log = RedisStreamLog(REDIS_URL, stream, client=client)
    try:
        await log.open()
        started = time.monotonic()
        assert await log.read_blocking(None, 10, block_ms=1300) == []
        assert 1.2 <= time.monotonic() - started < 3
    finally:
        await log.close()
        await client.aclose()


async def test_client_that_retries_is_refused() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379)  # redis-py default: retries on
    try:
        with pytest.raises(ValueError, match="retry"):
            RedisStreamLog(REDIS_URL, client=client)
    finally:
        await client.aclose()


async def test_durability_warning_on_this_server(log: RedisStreamLog) -> None:
    # The CI server runs with appendonly no, so the log must say it is not crash-safe.
    message = await log.durability_warning()
    assert message is not None
    assert "appendonly" in message and "appendfsync" in message


async def test_open_unreachable_fails_fast_and_clearly() -> None:
    log = RedisStreamLog("redis://:s3cret@127.0.0.1:1/0", "cashmarkets:test:unreachable")
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await log.open()
    finally:
        await log.close()
        await log.close()  # idempotent
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "cannot reach Redis" in message
    assert "s3cret" not in message
    assert isinstance(caught.value, ConnectionError)


async def test_close_is_idempotent(stream: str) -> None:
    log = RedisStreamLog(REDIS_URL, stream)
    await log.open()
    await log.close()
    await log.close()


async def test_record_time_is_the_entry_ids_unless_the_entry_predates_it(
    log: RedisStreamLog, stream: str, raw: redis.asyncio.Redis
) -> None:
    """Decision 022: entries this version appends carry their time in the id; an entry written
    before (no `t` field) reads with log_ts_ns None, so its command's own time is kept."""
    await raw.xadd(stream, {b"d": b"old"}, id="1000-0")
    new = await log.append([b"new"])
    old_record, new_record = await log.read_from(None, 10)
    assert old_record == LogRecord("1000-0", b"old")
    assert new_record.log_ts_ns == log.record_time_ns(new[0]) == int(new[0].split("-")[0]) * 1_000_000
    # Redis's clock, not ours: within a few seconds of this host's, in ns.
    assert abs(new_record.log_ts_ns - time.time_ns()) < 60 * 1_000_000_000
    assert entry_time_ns("1700000000123-7") == 1_700_000_000_123_000_000

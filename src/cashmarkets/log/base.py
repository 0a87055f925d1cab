"""The command log interface.

The log is the single source of truth: an ordered, durable sequence of encoded commands.
The engine's state is a pure function of it. Two backends implement it:

    CommandLog (Protocol)
      ├── SqliteJournal   (embedded default, cashmarkets.log.sqlite)
      └── RedisStreamLog  (distributed, cashmarkets.log.redis_streams)

A *position* is the backend's own ordering key, opaque to callers and carried as a string
(the SQLite row id, or the Redis stream entry id). Readers assign the engine's `seq` by
counting records in log order, so every backend yields the same seq numbering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

Position = str

# The largest batch one append may carry; the sequencer never builds a bigger one.
APPEND_BATCH_RECORDS_MAX = 4096


class LogRecord(NamedTuple):
    position: Position
    data: bytes
    # Distributed mode: the API process's channel that waits for this command's result.
    reply_to: str | None = None
    # The log's own time for this record (ns), when the log keeps one: a Redis entry written by
    # this version takes it from its entry id (decision 022). None: the command carries its time
    # (the embedded journal, where the runtime stamps it as it appends, and older Redis entries).
    log_ts_ns: int | None = None


class LogCorrupted(Exception):
    """The log failed an integrity check (a bad checksum, a gap, an undecodable record)."""


class CommandLog(Protocol):
    async def open(self) -> None:
        """Connect and create whatever the backend needs (tables, keys)."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    async def append(self, records: Sequence[bytes]) -> list[Position]:
        """Append records in order; return when they are durable, with one position each."""

    async def read_from(self, after: Position | None, limit: int) -> list[LogRecord]:
        """Records strictly after `after` (from the start when None), oldest first, at most `limit`."""

    async def last_position(self) -> Position | None:
        """The position of the newest record, or None for an empty log."""

    async def trim_below(self, position: Position) -> int:
        """Drop records strictly older than `position` (only ever below a snapshot); return count."""

    def record_time_ns(self, position: Position) -> int | None:
        """The log's own time for a record this version appended at `position` (what readers
        get as `LogRecord.log_ts_ns`), or None when the command carries its own time."""

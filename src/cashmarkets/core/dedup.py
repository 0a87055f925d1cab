"""The engine's dedup table: command_id -> the first result, in arrival order, bounded.

A repeated command id is answered from here. Entries leave oldest first, when older than the
window or when the table holds more than its limit; both bounds are part of the deterministic
state (they travel in snapshots as the ordered entries).

`DedupTable` is the pure-Python one. The C one (`_native.Dedup`, same methods) keeps a hash table
whose slots hold the hash, so a miss in a table of a million ids usually costs one cache line,
and its arrival order in a ring instead of two deques.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any


class DedupTable:
    __slots__ = ("_ids", "_results", "_ts")

    def __init__(self) -> None:
        self._results: dict[str, Any] = {}
        # Two parallel deques rather than one of (ts, id) tuples: no allocation per command.
        self._ts: deque[int] = deque()
        self._ids: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._ts)

    def get(self, command_id: str) -> Any:
        """The stored result, or None."""
        return self._results.get(command_id)

    def add(self, command_id: str, ts_ns: int, result: Any) -> None:
        """Store the result of a command id not in the table, as the newest entry."""
        self._results[command_id] = result
        self._ts.append(ts_ns)
        self._ids.append(command_id)

    def oldest_ns(self) -> int | None:
        """The timestamp of the oldest entry (None when empty)."""
        return self._ts[0] if self._ts else None

    def evict(self, oldest_ns: int, limit: int) -> None:
        """Drop entries, oldest first, while older than `oldest_ns` or more than `limit`."""
        order_ts, order_ids, results = self._ts, self._ids, self._results
        while order_ts and (len(order_ts) > limit or order_ts[0] < oldest_ns):
            order_ts.popleft()
            del results[order_ids.popleft()]

    def entries(self) -> list[tuple[str, int, Any]]:
        """(command_id, ts_ns, result), oldest first."""
        results = self._results
        return [(cid, ts, results[cid]) for ts, cid in zip(self._ts, self._ids, strict=True)]

    def load(self, entries: Iterable[tuple[str, int, Any]]) -> None:
        """Replace the contents with these entries (oldest first)."""
        self._results.clear()
        self._ts.clear()
        self._ids.clear()
        for command_id, ts_ns, result in entries:
            self.add(command_id, ts_ns, result)

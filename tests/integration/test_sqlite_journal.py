"""The SQLite journal on a real file: order, paging, durability across reopen, the hash chain,
trimming, and its checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cashmarkets.log.base import APPEND_BATCH_RECORDS_MAX, LogCorrupted
from cashmarkets.log.sqlite import SqliteJournal


async def test_append_returns_consecutive_positions_and_reads_back_in_order(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    assert await journal.last_position() is None
    assert await journal.append([]) == []
    assert await journal.append([b"a", b"b"]) == ["1", "2"]
    assert await journal.append([b"c"]) == ["3"]
    records = await journal.read_from(None, 10)
    assert [(r.position, r.data) for r in records] == [("1", b"a"), ("2", b"b"), ("3", b"c")]
    assert [r.data for r in await journal.read_from("1", 10)] == [b"b", b"c"]
    assert [r.data for r in await journal.read_from("1", 1)] == [b"b"]
    assert await journal.read_from("3", 10) == []
    assert await journal.last_position() == "3"
    await journal.close()


async def test_records_survive_reopen_and_the_chain_continues(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    await journal.append([bytes([i]) * 10 for i in range(50)])
    await journal.close()
    again = SqliteJournal(tmp_path / "j.db")
    await again.open()
    assert await again.last_position() == "50"
    assert await again.append([b"next"]) == ["51"]
    pages, after = [], None
    while page := await again.read_from(after, 7):
        pages.extend(page)
        after = page[-1].position
    assert [r.position for r in pages] == [str(i) for i in range(1, 52)]
    await again.close()


async def test_a_deleted_record_is_reported_as_a_gap(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    await journal.append([b"a", b"b", b"c"])
    with sqlite3.connect(tmp_path / "j.db") as db:
        db.execute("DELETE FROM journal WHERE pos = 2")
    with pytest.raises(LogCorrupted, match="gap"):
        await journal.read_from(None, 10)
    await journal.close()


async def test_trim_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    await journal.append([b"r%d" % i for i in range(10)])
    assert await journal.trim_below("6") == 5
    records = await journal.read_from(None, 100)
    assert [r.position for r in records] == ["6", "7", "8", "9", "10"]
    assert [r.data for r in await journal.read_from("7", 100)] == [b"r7", b"r8", b"r9"]
    with pytest.raises(LogCorrupted, match="trimmed"):
        await journal.read_from("3", 10)
    await journal.close()


async def test_oversize_batch_is_refused(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    with pytest.raises(ValueError, match="exceeds"):
        await journal.append([b"x"] * (APPEND_BATCH_RECORDS_MAX + 1))
    assert await journal.last_position() is None
    await journal.close()


async def test_a_journal_of_another_format_is_refused(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    await journal.close()
    with sqlite3.connect(tmp_path / "j.db") as db:
        db.execute("UPDATE journal_meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(LogCorrupted, match="format 99"):
        await SqliteJournal(tmp_path / "j.db").open()

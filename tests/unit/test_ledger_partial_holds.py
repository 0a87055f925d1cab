"""Partial posting and releasing of a hold (a resting order filling in pieces): the rest stays
pending, the hold resolves when nothing is left, and a rollback restores everything exactly."""

from __future__ import annotations

import pytest

from cashmarkets.core import codes
from cashmarkets.core.ledger import (
    HOLD_MORE,
    HOLD_PENDING,
    HOLD_POSTED,
    HOLD_VOIDED,
    POST_PART,
    VOID_PART,
    Transfer,
)
from tests.support.ledger_book import Book

from .engine_helpers import ledger_bytes


@pytest.fixture
def book() -> Book:
    return Book()


def test_post_part_keeps_the_rest_pending(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    out = book.ledger.resolve_part(hold_id, 100, 3, post=True)
    assert isinstance(out, Transfer)
    assert (out.kind, out.amount, out.pending_id) == (POST_PART, 100, hold_id)
    hold = book.ledger.holds[hold_id]
    assert (hold.amount, hold.posted_amount, hold.status) == (200, 100, HOLD_PENDING)
    assert (book.alice.debits_posted, book.alice.debits_pending) == (100, 200)
    assert (book.bob.credits_posted, book.bob.credits_pending) == (100, 200)
    assert book.alice.available == 1000 - 300
    book.ledger.check_invariants()


def test_void_part_releases_and_the_hold_resolves_when_empty(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    assert isinstance(book.ledger.resolve_part(hold_id, 100, 3, post=False), Transfer)
    assert book.alice.available == 800
    out = book.ledger.resolve_part(hold_id, 200, 4, post=False)
    assert isinstance(out, Transfer) and out.kind == VOID_PART
    assert book.ledger.holds[hold_id].status == HOLD_VOIDED
    assert book.alice.balance == 1000 and book.alice.debits_pending == 0
    assert book.ledger.resolve_part(hold_id, 1, 5, post=False) == codes.ALREADY_VOIDED
    book.ledger.check_invariants()


def test_a_hold_with_any_post_resolves_as_posted(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    book.ledger.resolve_part(hold_id, 1, 3, post=True)
    book.ledger.resolve_part(hold_id, 299, 3, post=False)
    assert book.ledger.holds[hold_id].status == HOLD_POSTED
    assert book.ledger.resolve_part(hold_id, 1, 5, post=True) == codes.ALREADY_POSTED


def test_forget_drops_the_resolved_hold(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    book.ledger.resolve_part(hold_id, 300, 3, post=True, forget=True)
    assert hold_id not in book.ledger.holds
    assert book.ledger.resolve_part(hold_id, 1, 5, post=True) == codes.PENDING_TRANSFER_NOT_FOUND
    book.ledger.check_invariants()


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (0, codes.AMOUNT_MUST_BE_POSITIVE),
        (-5, codes.AMOUNT_MUST_BE_POSITIVE),
        (301, codes.EXCEEDS_PENDING_AMOUNT),
    ],
)
def test_bad_amounts_change_nothing(book: Book, amount: int, code: str) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    before = ledger_bytes(book.ledger)
    for post in (True, False):
        assert book.ledger.resolve_part(hold_id, amount, 3, post=post) == code
    assert ledger_bytes(book.ledger) == before


def test_unknown_hold(book: Book) -> None:
    assert book.ledger.resolve_part(999, 1, 3, post=True) == codes.PENDING_TRANSFER_NOT_FOUND


def test_a_full_post_after_partial_posts_counts_every_post(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    book.ledger.resolve_part(hold_id, 100, 3, post=True)
    out = book.ledger.resolve(hold_id, 0, 4, post=True)
    assert isinstance(out, Transfer) and out.amount == 200
    assert book.ledger.holds[hold_id].posted_amount == 300
    assert book.alice.balance == 700 and book.bob.balance == 300
    book.ledger.check_invariants()


def test_rollback_restores_partial_operations_exactly(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    book.events = []
    book.ledger.begin(book.events)
    before = ledger_bytes(book.ledger)
    book.ledger.resolve_part(hold_id, 100, 3, post=True)
    book.ledger.resolve_part(hold_id, 50, 3, post=False)
    book.ledger.resolve_part(hold_id, 150, 3, post=True, forget=True)
    assert hold_id not in book.ledger.holds
    book.ledger.rollback()
    assert ledger_bytes(book.ledger) == before
    assert book.ledger.holds[hold_id].status == HOLD_PENDING
    book.ledger.check_invariants()


def test_hold_more_adds_to_a_pending_hold_under_the_same_checks(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    out = book.ledger.hold_more(hold_id, 200, 3)
    assert isinstance(out, Transfer) and (out.kind, out.amount, out.pending_id) == (HOLD_MORE, 200, hold_id)
    assert book.ledger.holds[hold_id].amount == 500 and book.alice.available == 500
    before = ledger_bytes(book.ledger)
    assert book.ledger.hold_more(hold_id, 501, 4) == codes.INSUFFICIENT_FUNDS
    assert book.ledger.hold_more(hold_id, 0, 4) == codes.AMOUNT_MUST_BE_POSITIVE
    assert book.ledger.hold_more(999, 1, 4) == codes.PENDING_TRANSFER_NOT_FOUND
    assert ledger_bytes(book.ledger) == before
    book.ledger.resolve_part(hold_id, 500, 5, post=True)
    assert book.ledger.hold_more(hold_id, 1, 6) == codes.ALREADY_POSTED
    book.ledger.check_invariants()


def test_hold_more_rolls_back(book: Book) -> None:
    hold_id = book.hold(book.alice, book.bob, 300)
    book.events = []
    book.ledger.begin(book.events)
    before = ledger_bytes(book.ledger)
    book.ledger.hold_more(hold_id, 100, 3)
    book.ledger.resolve_part(hold_id, 50, 3, post=True)
    book.ledger.rollback()
    assert ledger_bytes(book.ledger) == before
    book.ledger.check_invariants()

"""Property tests of the ledger through the engine: random command sequences are checked after every
step against the ledger's invariants and against a small independent model of the ledger that
predicts each command's result and every account's four totals."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cashmarkets.core import codes
from cashmarkets.core.commands import (
    Command,
    Deposit,
    LegSpec,
    LinkedTransfers,
    PlaceHold,
    PostHold,
    TransferFunds,
    VoidHold,
    Withdraw,
)
from cashmarkets.core.engine import Engine
from cashmarkets.core.ledger import (
    HOLD_PENDING,
    HOLD_POSTED,
    HOLD_VOIDED,
    HOUSE,
    NO_OVERDRAFT,
    OWNER_LENGTH_MAX,
    PENDING,
    POST,
    SINGLE,
    TRANSFER_CODES,
    TRANSFERS_PER_BATCH_MAX,
    VOID,
    WORLD,
    Transfer,
    escrow,
)
from cashmarkets.core.results import Accepted, Rejected, TransfersDone

from .engine_helpers import ledger_bytes, stamp_apply, totals

USERS = ["ann", "ben", "cat"]
KNOWN_ASSETS = ("USD", "BTC")
CREDIT_OWNERS = [*USERS, "dan", HOUSE, escrow("dice")]  # dan is never funded directly


# Valid by default (the simplest value Hypothesis favours is a valid one); `bad_input` and the
# "how" choices of the hold rules cover the refusals.
users = st.sampled_from(USERS)
assets = st.sampled_from(KNOWN_ASSETS)
amounts = st.integers(1, 3000)
small_amounts = st.integers(1, 200)
transfer_codes = st.sampled_from(["transfer", "fee", "pnl"])

Key = tuple[str, str]


# ---- the model ----------------------------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class Model:
    """What the ledger should hold: four totals per (owner, asset), holds by id, the next id."""

    def __init__(self) -> None:
        self.accounts: dict[
            Key, list[int]
        ] = {}  # [debits_posted, credits_posted, debits_pending, credits_pending]
        self.holds: dict[int, list[Any]] = {}  # id -> [debit key, credit key, amount, status, posted_amount]
        self.next_id = 1

    def open(self, owner: str, asset: str) -> None:
        if asset not in KNOWN_ASSETS:
            raise Refused(codes.UNKNOWN_ASSET)
        if not owner or len(owner) > OWNER_LENGTH_MAX:
            raise Refused(codes.BAD_OWNER)
        self.accounts[(owner, asset)] = [0, 0, 0, 0]

    def pair(self, debit_owner: str, credit_owner: str, asset: str, amount: int) -> tuple[Key, Key]:
        if amount <= 0:
            raise Refused(codes.AMOUNT_MUST_BE_POSITIVE)
        if (debit_owner, asset) not in self.accounts:
            if not debit_owner.startswith("@"):
                raise Refused(codes.UNKNOWN_ASSET if asset not in KNOWN_ASSETS else codes.INSUFFICIENT_FUNDS)
            self.open(debit_owner, asset)
        if (credit_owner, asset) not in self.accounts:
            self.open(credit_owner, asset)
        return (debit_owner, asset), (credit_owner, asset)

    def move(self, dr: Key, cr: Key, amount: int, code: str, pending: bool) -> int | str:
        if amount <= 0:
            return codes.AMOUNT_MUST_BE_POSITIVE
        if code not in TRANSFER_CODES:
            return codes.UNKNOWN_TRANSFER_CODE
        if dr == cr:
            return codes.ACCOUNTS_MUST_BE_DIFFERENT
        d, c = self.accounts[dr], self.accounts[cr]
        if dr[0] not in (WORLD, HOUSE) and d[0] + d[2] + amount > d[1]:
            return codes.INSUFFICIENT_FUNDS
        transfer_id = self.next_id
        self.next_id += 1
        if pending:
            d[2] += amount
            c[3] += amount
            self.holds[transfer_id] = [dr, cr, amount, HOLD_PENDING, 0]
        else:
            d[0] += amount
            c[1] += amount
        return transfer_id

    def resolve(self, hold_id: int, amount: int, post: bool) -> int | str:
        hold = self.holds.get(hold_id)
        if hold is None:
            return codes.PENDING_TRANSFER_NOT_FOUND
        if hold[3] == HOLD_POSTED:
            return codes.ALREADY_POSTED
        if hold[3] == HOLD_VOIDED:
            return codes.ALREADY_VOIDED
        if not post:
            amount = 0
        elif amount == 0:
            amount = hold[2]
        elif amount < 0:
            return codes.AMOUNT_MUST_BE_POSITIVE
        elif amount > hold[2]:
            return codes.EXCEEDS_PENDING_AMOUNT
        d, c = self.accounts[hold[0]], self.accounts[hold[1]]
        d[2] -= hold[2]
        c[3] -= hold[2]
        d[0] += amount
        c[1] += amount
        hold[3] = HOLD_POSTED if post else HOLD_VOIDED
        hold[4] = amount
        transfer_id = self.next_id
        self.next_id += 1
        return transfer_id

    def _single(
        self, debit: str, credit: str, asset: str, amount: int, code: str, pending: bool
    ) -> list[int]:
        dr, cr = self.pair(debit, credit, asset, amount)
        out = self.move(dr, cr, amount, code, pending)
        if isinstance(out, str):
            raise Refused(out)
        return [out]

    def _apply(self, cmd: Command) -> list[int]:
        owners = [getattr(cmd, f) for f in ("owner", "from_owner", "to_owner") if hasattr(cmd, f)]
        if isinstance(cmd, PlaceHold):
            owners = [cmd.owner]  # a hold may credit a system account
        if any(o.startswith("@") for o in owners):
            raise Refused(codes.BAD_OWNER)
        if isinstance(cmd, Deposit):
            return self._single(WORLD, cmd.owner, cmd.asset, cmd.amount, cmd.code, False)
        if isinstance(cmd, Withdraw):
            return self._single(cmd.owner, WORLD, cmd.asset, cmd.amount, "withdrawal", False)
        if isinstance(cmd, TransferFunds):
            return self._single(cmd.from_owner, cmd.to_owner, cmd.asset, cmd.amount, cmd.code, False)
        if isinstance(cmd, PlaceHold):
            return self._single(cmd.owner, cmd.to_owner, cmd.asset, cmd.amount, cmd.code, True)
        if isinstance(cmd, PostHold | VoidHold):
            amount = cmd.amount if isinstance(cmd, PostHold) else 0
            out = self.resolve(cmd.hold_id, amount, isinstance(cmd, PostHold))
            if isinstance(out, str):
                raise Refused(out)
            return [out]
        assert isinstance(cmd, LinkedTransfers)
        if not 0 < len(cmd.legs) <= TRANSFERS_PER_BATCH_MAX:
            raise Refused(codes.TOO_MANY_TRANSFERS)
        # First pass: accounts for every SINGLE/PENDING leg (credit sides opened as needed).
        pairs: list[tuple[Key, Key] | None] = []
        for spec in cmd.legs:
            if spec.kind in (POST, VOID):
                pairs.append(None)
            elif spec.kind in (SINGLE, PENDING):
                pairs.append(self.pair(spec.from_owner, spec.to_owner, spec.asset, spec.amount))
            else:
                raise Refused(codes.BAD_COMMAND)
        ids: list[int] = []
        for index, (spec, keys) in enumerate(zip(cmd.legs, pairs, strict=True)):
            if keys is None:
                out = self.resolve(spec.pending_id, spec.amount, spec.kind == POST)
            else:
                out = self.move(keys[0], keys[1], spec.amount, spec.code, spec.kind == PENDING)
            if isinstance(out, str):
                raise Refused(out, f"leg {index}")
            ids.append(out)
        return ids

    def predict(self, cmd: Command) -> tuple[Model, list[int] | Refused]:
        """The model after cmd (unchanged if it is refused) and its transfer ids or the refusal."""
        after = copy.deepcopy(self)
        try:
            return after, after._apply(cmd)
        except Refused as refused:
            return self, refused


# ---- engine-wide checks -------------------------------------------------------------------------------


def check_ledger(engine: Engine) -> None:
    """The invariants, checked independently of Ledger.check_invariants (which runs too)."""
    ledger = engine.ledger
    ledger.check_invariants()
    posted: dict[str, int] = {}
    pending: dict[str, int] = {}
    for acc in ledger.accounts.values():
        posted[acc.asset] = posted.get(acc.asset, 0) + acc.credits_posted - acc.debits_posted
        pending[acc.asset] = pending.get(acc.asset, 0) + acc.credits_pending - acc.debits_pending
        if acc.flags & NO_OVERDRAFT:
            assert acc.debits_posted + acc.debits_pending <= acc.credits_posted, acc
        if not acc.owner.startswith("@"):
            assert acc.flags & NO_OVERDRAFT, acc
        held = sum(
            h.amount
            for h in ledger.holds.values()
            if h.status == HOLD_PENDING and h.debit_account_id == acc.id
        )
        assert acc.debits_pending == held, acc
        incoming = sum(
            h.amount
            for h in ledger.holds.values()
            if h.status == HOLD_PENDING and h.credit_account_id == acc.id
        )
        assert acc.credits_pending == incoming, acc
    assert set(posted.values()) <= {0}, posted
    assert set(pending.values()) <= {0}, pending
    for hold in ledger.holds.values():
        assert 0 <= hold.posted_amount <= hold.amount
        if hold.status != HOLD_POSTED:
            assert hold.posted_amount == 0


def check_against_model(engine: Engine, model: Model) -> None:
    ledger = engine.ledger
    assert len(ledger.accounts) == len(model.accounts)
    for (owner, asset), expected in model.accounts.items():
        assert list(totals(ledger, owner, asset)) == expected, (owner, asset)
        assert ledger.account(owner, asset) is not None
    assert sorted(ledger.holds) == sorted(model.holds)
    for hold_id, (dr, cr, amount, status, posted_amount) in model.holds.items():
        hold = ledger.holds[hold_id]
        dr_acc, cr_acc = ledger.accounts[hold.debit_account_id], ledger.accounts[hold.credit_account_id]
        assert (dr_acc.owner, dr_acc.asset) == dr and (cr_acc.owner, cr_acc.asset) == cr
        assert (hold.amount, hold.status, hold.posted_amount) == (amount, status, posted_amount)
    assert ledger.next_transfer_id == model.next_id


# ---- the state machine --------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.model = Model()
        self.counter = 0

    def next_id(self) -> str:
        self.counter += 1
        return f"cmd-{self.counter}"

    def run(self, cmd: Command) -> Accepted | Rejected:
        engine = self.engine
        after, predicted = self.model.predict(cmd)
        before = ledger_bytes(engine)
        products_before = {name: p.snapshot_state() for name, p in engine.products.items()}
        result, events = stamp_apply(engine, cmd)
        assert result.seq == cmd.seq == engine.seq
        assert result.command_id == cmd.command_id
        if isinstance(predicted, Refused):
            assert isinstance(result, Rejected), (cmd, result)
            assert result.code == predicted.code, (cmd, result)
            if predicted.detail is not None:
                assert result.detail == predicted.detail
            # Nothing changed: same ledger bytes, same product states, no events.
            assert ledger_bytes(engine) == before
            assert {name: p.snapshot_state() for name, p in engine.products.items()} == products_before
            assert events == []
        else:
            assert isinstance(result, Accepted), (cmd, result)
            assert isinstance(result.data, TransfersDone)
            assert list(result.data.transfer_ids) == predicted
            transfers = [e for e in events if isinstance(e, Transfer)]
            assert [t.id for t in transfers] == predicted
            assert all(e.seq == cmd.seq for e in events)
        self.model = after
        check_against_model(engine, self.model)
        return result

    def hold_ids(self, data: st.DataObject) -> int:
        """Mostly a pending hold, else any hold (maybe resolved), else any id (maybe no hold)."""
        pending = sorted(k for k, h in self.model.holds.items() if h[3] == HOLD_PENDING)
        which = data.draw(st.sampled_from(["pending", "pending", "any", "random"]), label="which hold")
        if which == "pending" and pending:
            return data.draw(st.sampled_from(pending), label="hold_id")
        if which != "random" and self.model.holds:
            return data.draw(st.sampled_from(sorted(self.model.holds)), label="hold_id")
        return data.draw(st.integers(0, self.model.next_id + 2), label="hold_id")

    @rule(owner=users, asset=assets, amount=amounts)
    def deposit(self, owner: str, asset: str, amount: int) -> None:
        self.run(Deposit(command_id=self.next_id(), owner=owner, asset=asset, amount=amount))

    @initialize(balances=st.lists(st.integers(0, 5000), min_size=len(USERS) * 2, max_size=len(USERS) * 2))
    def fund(self, balances: list[int]) -> None:
        """Start from funded users (0 = that account stays unopened)."""
        keys = [(u, a) for u in USERS for a in KNOWN_ASSETS]
        for (owner, asset), amount in zip(keys, balances, strict=True):
            if amount:
                self.run(Deposit(command_id=self.next_id(), owner=owner, asset=asset, amount=amount))

    def spend(self, data: st.DataObject, owner: str, asset: str) -> int:
        """Mostly at most what `owner` may spend (the simplest choice), sometimes any amount."""
        have = self.available(owner, asset) if (owner, asset) in self.model.accounts else 0
        if have > 0 and not data.draw(st.booleans(), label="oversize"):
            return data.draw(st.integers(1, have), label="amount")
        return data.draw(amounts, label="amount")

    @rule(data=st.data(), owner=users, asset=assets)
    def withdraw(self, data: st.DataObject, owner: str, asset: str) -> None:
        amount = self.spend(data, owner, asset)
        self.run(Withdraw(command_id=self.next_id(), owner=owner, asset=asset, amount=amount))

    @rule(data=st.data(), src=users, dst=st.sampled_from([*USERS, "dan"]), asset=assets, code=transfer_codes)
    def transfer(self, data: st.DataObject, src: str, dst: str, asset: str, code: str) -> None:
        amount = self.spend(data, src, asset)
        cmd = TransferFunds(
            command_id=self.next_id(), from_owner=src, to_owner=dst, asset=asset, amount=amount, code=code
        )
        self.run(cmd)

    @rule(data=st.data(), owner=users, to_owner=st.sampled_from(CREDIT_OWNERS), asset=assets)
    def place_hold(self, data: st.DataObject, owner: str, to_owner: str, asset: str) -> None:
        amount = self.spend(data, owner, asset)
        cmd = PlaceHold(command_id=self.next_id(), owner=owner, to_owner=to_owner, asset=asset, amount=amount)
        self.run(cmd)

    def pending_holds(self) -> list[int]:
        return sorted(k for k, h in self.model.holds.items() if h[3] == HOLD_PENDING)

    @precondition(lambda self: self.pending_holds())
    @rule(data=st.data(), how=st.sampled_from(["all", "part", "exact", "over", "negative"]))
    def post_hold(self, data: st.DataObject, how: str) -> None:
        hold_id = data.draw(st.sampled_from(self.pending_holds()), label="hold_id")
        held = self.model.holds[hold_id][2]
        amount = {
            "all": 0,
            "part": data.draw(st.integers(1, held), label="part"),
            "exact": held,
            "over": held + data.draw(st.integers(1, 100), label="over"),
            "negative": -data.draw(st.integers(1, 5), label="negative"),
        }[how]
        self.run(PostHold(command_id=self.next_id(), hold_id=hold_id, amount=amount))

    @precondition(lambda self: self.pending_holds())
    @rule(data=st.data())
    def void_hold(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(self.pending_holds()), label="hold_id")
        self.run(VoidHold(command_id=self.next_id(), hold_id=hold_id))

    @rule(data=st.data(), post=st.booleans(), amount=st.integers(0, 100))
    def resolve_any(self, data: st.DataObject, post: bool, amount: int) -> None:
        """Post or void any id: resolved holds, unknown ids, ids of plain transfers."""
        hold_id = self.hold_ids(data)
        cmd: Command
        if post:
            cmd = PostHold(command_id=self.next_id(), hold_id=hold_id, amount=amount)
        else:
            cmd = VoidHold(command_id=self.next_id(), hold_id=hold_id)
        self.run(cmd)

    def sources(self, asset: str) -> st.SearchStrategy[str]:
        """Mostly users with money to spend in `asset`."""
        funded = [o for o in USERS if (o, asset) in self.model.accounts and self.available(o, asset) > 0]
        return st.sampled_from(funded) | users if funded else users

    def available(self, owner: str, asset: str) -> int:
        debits, credits, held, _ = self.model.accounts[(owner, asset)]
        return credits - debits - held

    def draw_legs(self, data: st.DataObject) -> list[LegSpec]:
        legs = []
        for index in range(data.draw(st.integers(1, 4), label="legs")):
            kind = data.draw(st.sampled_from([SINGLE, PENDING, POST, VOID]), label="kind")
            asset = data.draw(assets, label="asset")
            # A POST/VOID may target a hold placed by an earlier leg of this batch.
            in_batch = data.draw(st.booleans(), label="in batch")
            if in_batch:
                pending_id = data.draw(
                    st.integers(self.model.next_id, self.model.next_id + index), label="pid"
                )
            else:
                pending_id = self.hold_ids(data)
            from_owner = data.draw(self.sources(asset), label="from")
            to_owner = data.draw(st.sampled_from([o for o in CREDIT_OWNERS if o != from_owner]), label="to")
            legs.append(
                LegSpec(
                    kind=kind,
                    from_owner=from_owner,
                    to_owner=to_owner,
                    asset=asset,
                    amount=data.draw(small_amounts, label="amount"),
                    code=data.draw(st.sampled_from(["transfer", "bet", "stake"]), label="code"),
                    pending_id=pending_id,
                )
            )
        return legs

    @rule(data=st.data())
    def linked(self, data: st.DataObject) -> None:
        self.run(LinkedTransfers(command_id=self.next_id(), legs=self.draw_legs(data)))

    @rule(data=st.data(), owner=users, asset=assets, amount=st.integers(-3, 0))
    def bad_input(self, data: st.DataObject, owner: str, asset: str, amount: int) -> None:
        """Commands with one bad field; the model says which code wins when several apply."""
        cid = self.next_id()
        legs = self.draw_legs(data)
        bad_leg = data.draw(st.integers(0, len(legs) - 1), label="bad leg")
        choices: list[Command] = [
            Deposit(command_id=cid, owner=owner, asset=asset, amount=amount),
            Deposit(command_id=cid, owner=owner, asset="XYZ", amount=5),
            Deposit(command_id=cid, owner=owner, asset=asset, amount=5, code="gift"),
            Deposit(command_id=cid, owner=HOUSE, asset=asset, amount=5),
            Withdraw(command_id=cid, owner=owner, asset="XYZ", amount=5),
            Withdraw(command_id=cid, owner=owner, asset=asset, amount=amount),
            Withdraw(command_id=cid, owner="dan", asset=asset, amount=1),
            TransferFunds(command_id=cid, from_owner=owner, to_owner=owner, asset=asset, amount=1),
            TransferFunds(
                command_id=cid, from_owner=owner, to_owner="cat", asset=asset, amount=1, code="gift"
            ),
            TransferFunds(command_id=cid, from_owner=owner, to_owner=WORLD, asset=asset, amount=1),
            TransferFunds(command_id=cid, from_owner=owner, to_owner="x" * 129, asset=asset, amount=1),
            PlaceHold(command_id=cid, owner=owner, asset=asset, amount=amount),
            PlaceHold(command_id=cid, owner=owner, to_owner=owner, asset=asset, amount=1),
            PlaceHold(command_id=cid, owner=escrow("dice"), asset=asset, amount=1),
            LinkedTransfers(command_id=cid, legs=[]),
            LinkedTransfers(command_id=cid, legs=legs * (TRANSFERS_PER_BATCH_MAX // len(legs) + 1)),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=9)),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=SINGLE, amount=amount)),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=PENDING, asset="XYZ")),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=SINGLE, code="gift")),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=SINGLE, from_owner="dan")),
            LinkedTransfers(command_id=cid, legs=self.spoil(legs, bad_leg, kind=POST, pending_id=10**6)),
            LinkedTransfers(
                command_id=cid, legs=self.spoil(legs, bad_leg, kind=PENDING, to_owner=owner, from_owner=owner)
            ),
        ]
        self.run(data.draw(st.sampled_from(choices), label="bad command"))

    @staticmethod
    def spoil(legs: list[LegSpec], index: int, **changes: Any) -> list[LegSpec]:
        fields = {f: getattr(legs[index], f) for f in LegSpec.__struct_fields__}
        fields.update(changes)
        return [*legs[:index], LegSpec(**fields), *legs[index + 1 :]]

    @precondition(lambda self: any(k[0] in USERS for k in self.model.accounts))
    @rule(data=st.data(), how=st.sampled_from(["void", "all", "part", "exact", "keep"]))
    def hold_then_resolve(self, data: st.DataObject, how: str) -> None:
        """Place a hold between two existing accounts, then void it (every account's four totals are
        exactly as before), post all or part of it (only the posted amount moved), or keep it."""
        owner, asset = data.draw(st.sampled_from(sorted(k for k in self.model.accounts if k[0] in USERS)))
        acc = self.engine.ledger.account(owner, asset)
        assert acc is not None
        others = sorted(o for (o, a) in self.model.accounts if a == asset and o != owner)
        if acc.available <= 0 or not others:
            return
        to_owner = data.draw(st.sampled_from(others), label="to_owner")
        amount = data.draw(st.integers(1, acc.available), label="hold amount")
        ledger = self.engine.ledger
        before = {k: totals(ledger, *k) for k in self.model.accounts}
        result = self.run(
            PlaceHold(command_id=self.next_id(), owner=owner, to_owner=to_owner, asset=asset, amount=amount)
        )
        assert isinstance(result, Accepted) and isinstance(result.data, TransfersDone)
        hold_id = result.data.transfer_ids[0]
        assert {k: totals(ledger, *k) for k in self.model.accounts} != before
        if how == "keep":
            return
        if how == "void":
            self.run(VoidHold(command_id=self.next_id(), hold_id=hold_id))
            assert {k: totals(ledger, *k) for k in self.model.accounts} == before
            return
        posted = {"all": amount, "exact": amount, "part": data.draw(st.integers(1, amount), label="part")}[
            how
        ]
        self.run(PostHold(command_id=self.next_id(), hold_id=hold_id, amount=0 if how == "all" else posted))
        expected = dict(before)
        dp, cp, dpend, cpend = before[(owner, asset)]
        expected[(owner, asset)] = (dp + posted, cp, dpend, cpend)
        dp, cp, dpend, cpend = before[(to_owner, asset)]
        expected[(to_owner, asset)] = (dp, cp + posted, dpend, cpend)
        assert {k: totals(ledger, *k) for k in self.model.accounts} == expected

    @invariant()
    def ledger_invariants(self) -> None:
        check_ledger(self.engine)


LedgerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase


# ---- standalone properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    deposits=st.lists(st.tuples(users, st.integers(1, 1000)), min_size=1, max_size=5),
    moves=st.lists(st.tuples(users, users, st.integers(1, 400), st.booleans()), max_size=8),
    owner=users,
    to_owner=st.sampled_from(CREDIT_OWNERS),
    fraction=st.floats(0.01, 1.0),
)
def test_void_restores_the_prior_totals(
    deposits: list[tuple[str, int]],
    moves: list[tuple[str, str, int, bool]],
    owner: str,
    to_owner: str,
    fraction: float,
) -> None:
    engine = Engine()
    for index, (who, amount) in enumerate(deposits):
        stamp_apply(engine, Deposit(command_id=f"d{index}", owner=who, asset="USD", amount=amount))
    for index, (src, dst, amount, hold) in enumerate(moves):
        cmd: Command
        if hold:
            cmd = PlaceHold(command_id=f"m{index}", owner=src, to_owner=dst, asset="USD", amount=amount)
        else:
            cmd = TransferFunds(
                command_id=f"m{index}", from_owner=src, to_owner=dst, asset="USD", amount=amount
            )
        stamp_apply(engine, cmd)
    acc = engine.ledger.account(owner, "USD")
    if acc is None or acc.available <= 0 or owner == to_owner:
        amount = 1  # the hold is then refused, which must change nothing either
    else:
        amount = max(1, int(acc.available * fraction))
    before_accounts = {
        (a.owner, a.asset): totals(engine.ledger, a.owner, a.asset) for a in engine.ledger.accounts.values()
    }
    before = ledger_bytes(engine)
    result, _ = stamp_apply(
        engine, PlaceHold(command_id="h", owner=owner, to_owner=to_owner, asset="USD", amount=amount)
    )
    if isinstance(result, Rejected):
        assert ledger_bytes(engine) == before
        return
    assert isinstance(result.data, TransfersDone)
    voided, events = stamp_apply(engine, VoidHold(command_id="v", hold_id=result.data.transfer_ids[0]))
    assert isinstance(voided, Accepted)
    assert [(e.kind, e.amount) for e in events] == [(VOID, 0)]
    after_accounts = {
        key: totals(engine.ledger, *key) for key in before_accounts
    }  # a credit account opened by the hold stays, with zero totals
    assert after_accounts == before_accounts
    for acc_after in engine.ledger.accounts.values():
        key = (acc_after.owner, acc_after.asset)
        if key not in before_accounts:
            assert totals(engine.ledger, *key) == (0, 0, 0, 0)
    check_ledger(engine)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_rejected_commands_change_no_state(data: st.DataObject) -> None:
    """Commands built to be refused (bad amounts, owners, assets, hold ids) leave the whole snapshot
    unchanged apart from seq, ts_ns and the dedup table."""
    engine = Engine()
    stamp_apply(engine, Deposit(command_id="seed", owner="ann", asset="USD", amount=500))
    stamp_apply(engine, PlaceHold(command_id="seed-h", owner="ann", asset="USD", amount=100))
    cmd = data.draw(
        st.one_of(
            st.builds(
                Deposit,
                command_id=st.just("x"),
                owner=st.just("ann"),
                asset=assets,
                amount=st.integers(-9, 0),
            ),
            st.builds(
                Withdraw, command_id=st.just("x"), owner=users, asset=assets, amount=st.integers(501, 10_000)
            ),
            st.builds(
                TransferFunds,
                command_id=st.just("x"),
                from_owner=st.sampled_from(["ann", "@house", "ben"]),
                to_owner=st.sampled_from(["@world", "ann", ""]),
                asset=st.just("USD"),
                amount=st.integers(401, 10_000),
            ),
            st.builds(
                PostHold, command_id=st.just("x"), hold_id=st.integers(3, 100), amount=st.integers(-5, 5)
            ),
            st.builds(VoidHold, command_id=st.just("x"), hold_id=st.integers(3, 100)),
        )
    )
    body_before = engine.codec.snapshot_decoder.decode(engine.snapshot())
    result, events = stamp_apply(engine, cmd)
    assert isinstance(result, Rejected), result
    assert events == []
    body_after = engine.codec.snapshot_decoder.decode(engine.snapshot())
    assert engine.codec.encode(body_after.ledger) == engine.codec.encode(body_before.ledger)
    assert body_after.products == body_before.products
    assert body_after.internal_errors == body_before.internal_errors == 0
    assert body_after.seq == body_before.seq + 1
    assert [e.command_id for e in body_after.dedup] == [*(e.command_id for e in body_before.dedup), "x"]

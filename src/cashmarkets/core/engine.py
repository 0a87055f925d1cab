"""The deterministic engine: `apply(command) -> (result, events)`, one command at a time.

    Engine
      ├── Ledger                 every product's money
      ├── products               each registers handlers for its command types and owns a state
      ├── dedup table            command_id -> first result, bounded by count and by age
      ├── fences                 singleton role -> the highest lease token seen (ClaimFence, `fence`)
      ├── rules                  product -> its rules pinned in the log (SetRules, decision 023)
      └── snapshot/restore       canonical MessagePack; state_hash = sha256 of that encoding

The engine reads no clock and draws no randomness: `seq` and `ts_ns` arrive stamped on each
command. A handler validates first and mutates after; should it raise anyway, every mutation it
made (ledger journal + product undo callbacks) is rolled back and the command is rejected as
internal_error. Same commands in the same order therefore always give the same state, bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from cashmarkets.core import codes, native
from cashmarkets.core.commands import ENGINE_COMMANDS, ClaimFence, Command, SetRules
from cashmarkets.core.dedup import DedupTable
from cashmarkets.core.events import LEDGER_EVENTS
from cashmarkets.core.ledger import Ledger, LedgerState
from cashmarkets.core.results import Accepted, Reject, Rejected, ResultData

if TYPE_CHECKING:
    from cashmarkets.core.reconcile import Check

SNAPSHOT_FORMAT_VERSION: Final = 1
DEFAULT_ASSETS: Final = ("USD", "USDC", "BTC", "ETH", "SOL")
ROLE_LENGTH_MAX: Final = 64
# The rules version a log without a SetRules for a product ran under: the compiled-in defaults
# from before rules were pinned in the log (docs/decisions/023).
IMPLICIT_RULES_VERSION: Final = 1

Result = Accepted | Rejected
Handler = Callable[[Any], "ResultData | Reject | None"]


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    assets: tuple[str, ...] = DEFAULT_ASSETS
    # A repeated command_id is answered from this table; entries leave it after this long...
    dedup_window_ns: int = 24 * 3600 * 1_000_000_000
    # ...or when it holds this many, oldest first. Both bounds are part of the deterministic state.
    dedup_entries_max: int = 1_000_000
    # Use the C hot paths (`native.py`) when they are built; the results are the same either way.
    native: bool = True


class Product(Protocol):
    """A product: command handlers plus a state that can be snapshotted and restored."""

    name: str
    commands: tuple[type[Command], ...]
    events: tuple[type, ...]
    results: tuple[type[ResultData], ...]
    # Its rules (markets, fees, limits): a msgspec Struct type, or None for a product without any.
    config_type: type[msgspec.Struct] | None
    # The version of the code that interprets `config`; bumped when a rule's meaning changes.
    rules_version: int
    config: Any

    def handlers(self) -> dict[type[Command], Handler]: ...

    def configure(self, config: Any) -> None:
        """Take `config` in place of the one it was built with (its state is as built)."""
        ...

    def snapshot_state(self) -> bytes:
        """Canonical encoding of the product's state (sorted, deterministic)."""
        ...

    def restore_state(self, data: bytes) -> None: ...

    def reconcile(self) -> list[Check]:
        """The product's own checks for `cashmarkets reconcile` (its escrows against what its
        open positions or orders hold); [] when it has none beyond the ledger's."""
        ...


class DedupEntry(msgspec.Struct, array_like=True, gc=False):
    command_id: str
    ts_ns: int
    result: Accepted | Rejected


class _SnapshotBodyV1(msgspec.Struct, array_like=True):
    version: int
    seq: int
    ts_ns: int
    ledger: LedgerState
    products: dict[str, bytes]
    dedup: list[DedupEntry]
    internal_errors: int


class _SnapshotBodyV2(_SnapshotBodyV1, array_like=True):
    # Singleton role -> highest lease token seen. An engine that never saw one encodes as
    # `_SnapshotBodyV1`, byte for byte as before fencing, so older logs keep their state hashes.
    fences: dict[str, int] = msgspec.field(default_factory=dict)


class PinnedRules(msgspec.Struct, array_like=True, gc=False):
    version: int
    config: bytes  # canonical MessagePack of the product's config_type
    seq: int  # the SetRules that pinned them


class SnapshotBody(_SnapshotBodyV2, array_like=True):
    # Product -> its pinned rules. Empty (a log from before SetRules) encodes as the older layouts,
    # so those logs keep their state hashes.
    rules: dict[str, PinnedRules] = msgspec.field(default_factory=dict)


class Engine:
    """The single-threaded state machine every product runs on."""

    def __init__(self, config: EngineConfig | None = None, products: Iterable[Any] = ()) -> None:
        from cashmarkets.core.products.ledger import LedgerProduct

        self.config = config or EngineConfig()
        self.ledger = Ledger(frozenset(self.config.assets))
        self.seq = 0
        self.ts_ns = 0
        self.internal_errors = 0
        self.fences: dict[str, int] = {}
        self.rules: dict[str, PinnedRules] = {}
        self.products: dict[str, Any] = {}
        self._handlers: dict[type[Command], Handler] = {
            ClaimFence: self._claim_fence,
            SetRules: self._set_rules,
        }
        self._built_states: dict[str, bytes] = {}  # each product's state as built: "not in use"
        # Cached: read on every command.
        self._dedup_window_ns = self.config.dedup_window_ns
        self._dedup_entries_max = self.config.dedup_entries_max
        # command_id -> first result, oldest first (dedup.py); the C one when the C paths run.
        self._native_on = self.config.native and native.available()
        self._dedup: Any = native.dedup_table(self._dedup_entries_max) if self._native_on else DedupTable()
        self._undo: list[Callable[[], object]] = []
        self.register(LedgerProduct(self))
        for product in products:
            # A product that needs the engine (its ledger, emit, on_rollback) comes as a factory.
            self.register(product(self) if callable(product) and not hasattr(product, "name") else product)
        self._codec: EngineCodec | None = None
        self._bind_native()

    def _bind_native(self) -> None:
        """Point `apply` at a new C applier (after a restore too: it keeps its own seq and ts_ns)."""
        if self._native_on:
            self.apply = native.applier(self)  # type: ignore[method-assign]

    @property
    def native(self) -> bool:
        """Whether this engine runs the C hot paths."""
        return self._native_on

    # ---- registration -----------------------------------------------------------------------

    def register(self, product: Any) -> None:
        assert product.name not in self.products, f"product {product.name} registered twice"
        for command_type, handler in product.handlers().items():
            assert command_type not in self._handlers, f"{command_type} handled twice"
            self._handlers[command_type] = handler
        self.products[product.name] = product
        self._built_states[product.name] = product.snapshot_state()
        self._codec = None

    @property
    def codec(self) -> EngineCodec:
        """Encoders/decoders for every registered command, event and result type."""
        if self._codec is None:
            self._codec = EngineCodec(self.products.values())
        return self._codec

    # ---- applying -----------------------------------------------------------------------------

    def on_rollback(self, undo: Callable[[], object]) -> None:
        """Handlers that mutate product state register how to undo it, in case they later raise."""
        self._undo.append(undo)

    def fence(self, role: str, token: int) -> Reject | None:
        """Check a singleton's lease token (docs/decisions/018): lower than the highest seen for
        `role` is refused as stale_fence; higher becomes the highest (undone if the command is
        rejected later). Token 0 is an unfenced command: accepted until the role's first token."""
        highest = self.fences.get(role, 0)
        if token < highest:
            return Reject(codes.STALE_FENCE, f"{role}: token {token} < {highest}")
        if token > highest:
            self.fences[role] = token
            if highest:
                self.on_rollback(lambda: self.fences.__setitem__(role, highest))
            else:
                self.on_rollback(lambda: self.fences.pop(role, None))
        return None

    def _claim_fence(self, cmd: ClaimFence) -> Reject | None:
        if not 0 < len(cmd.role) <= ROLE_LENGTH_MAX or cmd.token < 1:
            return Reject(codes.BAD_COMMAND, f"a role is 1..{ROLE_LENGTH_MAX} characters; a token is 1+")
        return self.fence(cmd.role, cmd.token)

    # ---- rules (docs/decisions/023) ----------------------------------------------------------------

    def _set_rules(self, cmd: SetRules) -> Reject | None:
        product = self.products.get(cmd.product)
        if product is None or product.config_type is None or cmd.version < 1:
            return Reject(codes.BAD_COMMAND, f"no configurable product {cmd.product!r}, or version < 1")
        try:
            config = msgspec.msgpack.decode(cmd.config, type=product.config_type)
            if config != product.config:
                type(product)(self, config)  # refuses a configuration it cannot run (by raising)
        except (msgspec.DecodeError, msgspec.ValidationError, AssertionError, ValueError) as exc:
            return Reject(codes.BAD_COMMAND, f"{cmd.product} rules: {exc}"[:200])
        pinned = self.rules.get(cmd.product)
        if pinned is not None and cmd.version < pinned.version:
            return Reject(codes.RULES_REFUSED, f"version {cmd.version} < {pinned.version} in force")
        if config != product.config:
            if product.snapshot_state() != self._built_states[cmd.product]:
                # A change to a product in use needs a stated effective point: not built yet.
                return Reject(codes.RULES_REFUSED, f"{cmd.product} is in use; its rules differ")
            self._configure(cmd.product, config)
        self.rules[cmd.product] = PinnedRules(cmd.version, cmd.config, cmd.seq)
        if pinned is None:
            self.on_rollback(lambda: self.rules.pop(cmd.product, None))
        else:
            self.on_rollback(lambda: self.rules.__setitem__(cmd.product, pinned))
        return None

    def _configure(self, name: str, config: Any) -> None:
        product = self.products[name]
        product.configure(config)
        # Its handlers may be new objects (spot's C fast path is built from the config).
        self._handlers.update(product.handlers())
        self._built_states[name] = product.snapshot_state()

    def genesis_commands(self) -> list[SetRules]:
        """A SetRules per configurable product with none pinned yet: its configuration and rules
        version as built. The runtime logs these first on an empty log."""
        encode = self.codec.encoder.encode
        return [
            SetRules(
                command_id=f"rules:{name}:{p.rules_version}",
                product=name,
                version=p.rules_version,
                config=encode(p.config),
            )
            for name, p in sorted(self.products.items())
            if p.config_type is not None and name not in self.rules
        ]

    def rules_version_of(self, name: str) -> int:
        """The rules version the log pins for a product (IMPLICIT_RULES_VERSION when none)."""
        pinned = self.rules.get(name)
        return IMPLICIT_RULES_VERSION if pinned is None else pinned.version

    def rules_problems(self) -> list[str]:
        """Products whose code runs another rules version than the log pins."""
        return [
            f"{name} rules: the log has version {self.rules_version_of(name)}, "
            f"this build runs version {p.rules_version}"
            for name, p in sorted(self.products.items())
            if p.config_type is not None and self.rules_version_of(name) != p.rules_version
        ]

    def emit(self, event: Any) -> None:
        # The command's event list: the ledger appends its transfers to the same one.
        self.ledger.events.append(event)

    def apply(self, cmd: Command) -> tuple[Result, list[Any]]:
        """Apply one stamped command; return its result and the events it caused."""
        seq = cmd.seq
        assert seq == self.seq + 1, f"seq gap: engine at {self.seq}, command {seq}"
        assert cmd.ts_ns >= self.ts_ns, "time went backwards"
        self.seq = seq
        self.ts_ns = ts_ns = cmd.ts_ns
        command_id = cmd.command_id
        dedup = self._dedup
        # Expire by age first, so whether a repeat is answered from the table depends only on
        # its own timestamp, never on whether other commands happened to arrive in between.
        oldest_ns = dedup.oldest_ns()
        if oldest_ns is not None and oldest_ns < ts_ns - self._dedup_window_ns:
            dedup.evict(ts_ns - self._dedup_window_ns, self._dedup_entries_max)
        prior = dedup.get(command_id)
        if prior is not None:
            return prior, []
        # Fresh per-command buffers: the ledger's undo journal and the event list.
        events: list[Any] = []
        ledger = self.ledger
        if ledger._journal:
            ledger._journal.clear()
        ledger.events = events
        if self._undo:
            self._undo.clear()
        result: Result
        handler = self._handlers.get(type(cmd))
        if handler is None:
            result = self._unknown_command(seq, command_id)
        else:
            try:
                out = handler(cmd)
            except Exception as exc:  # a handler bug must never corrupt state
                result = self._internal_error(seq, command_id, exc)
            else:
                if out.__class__ is Reject:
                    result = self._rejected(seq, command_id, out)
                else:
                    result = Accepted(seq, command_id, out)  # type: ignore[arg-type]
        dedup.add(command_id, ts_ns, result)
        if len(dedup) > self._dedup_entries_max:
            dedup.evict(ts_ns - self._dedup_window_ns, self._dedup_entries_max)
        return result, events

    # The rare branches of apply, shared with the C applier.

    def _unknown_command(self, seq: int, command_id: str) -> Rejected:
        return Rejected(seq=seq, command_id=command_id, code=codes.UNKNOWN_COMMAND)

    def _internal_error(self, seq: int, command_id: str, exc: Exception) -> Rejected:
        self._rollback()
        self.internal_errors += 1
        detail = f"{type(exc).__name__}: {exc}"[:200]
        return Rejected(seq=seq, command_id=command_id, code=codes.INTERNAL_ERROR, detail=detail)

    def _rejected(self, seq: int, command_id: str, out: Reject) -> Rejected:
        # Handlers reject before mutating; roll back anyway so a late reject is safe.
        self._rollback()
        return Rejected(seq=seq, command_id=command_id, code=out.code, detail=out.detail)

    def _rollback(self) -> None:
        self.ledger.rollback()
        while self._undo:
            self._undo.pop()()
        self.ledger.events.clear()

    def result_of(self, command_id: str) -> Result | None:
        """The stored result of a command still inside the dedup window."""
        found: Result | None = self._dedup.get(command_id)
        return found

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as canonical MessagePack: equal states give equal bytes."""
        fields: dict[str, Any] = dict(
            version=SNAPSHOT_FORMAT_VERSION,
            seq=self.seq,
            ts_ns=self.ts_ns,
            ledger=self.ledger.state(),
            products={name: p.snapshot_state() for name, p in sorted(self.products.items())},
            dedup=[DedupEntry(cid, ts, result) for cid, ts, result in self._dedup.entries()],
            internal_errors=self.internal_errors,
        )
        body: _SnapshotBodyV1
        if self.rules:
            body = SnapshotBody(**fields, fences=dict(self.fences), rules=dict(self.rules))
        elif self.fences:
            body = _SnapshotBodyV2(**fields, fences=dict(self.fences))
        else:
            body = _SnapshotBodyV1(**fields)
        return self.codec.snapshot_encoder.encode(body)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        body = self.codec.snapshot_decoder.decode(data)
        if body.version != SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"snapshot format {body.version}, this engine reads {SNAPSHOT_FORMAT_VERSION}")
        if set(body.products) != set(self.products):
            raise ValueError(f"snapshot products {sorted(body.products)} != {sorted(self.products)}")
        self.seq = body.seq
        self.ts_ns = body.ts_ns
        self.internal_errors = body.internal_errors
        self.fences = dict(body.fences)
        self.rules = dict(body.rules)
        self.ledger.restore(body.ledger)
        for name, pinned in self.rules.items():
            # The products' states are read under the rules they were made with.
            product = self.products[name]
            config = msgspec.msgpack.decode(pinned.config, type=product.config_type)
            if config != product.config:
                self._configure(name, config)
        for name, state in body.products.items():
            self.products[name].restore_state(state)
        self._dedup.load((e.command_id, e.ts_ns, e.result) for e in body.dedup)
        self._bind_native()  # the applier keeps seq and ts_ns

    def state_hash(self) -> str:
        """sha256 of the canonical snapshot: the determinism check across replays and machines."""
        return hashlib.sha256(self.snapshot()).hexdigest()


def snapshot_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EngineCodec:
    """MessagePack encoders/decoders built from the registered products' types."""

    def __init__(self, products: Iterable[Any]) -> None:
        products = list(products)
        command_types = ENGINE_COMMANDS + tuple(t for p in products for t in p.commands)
        event_types = tuple(LEDGER_EVENTS) + tuple(t for p in products for t in p.events)
        result_types = tuple(t for p in products for t in p.results)
        self.command_type: Any = _union(command_types)
        self.event_type: Any = _union(event_types)
        result_data: Any = _union(result_types) | None
        # Results and snapshots embed ResultData; decode them through the concrete union.
        accepted = msgspec.defstruct(
            "Accepted",
            [("seq", int), ("command_id", str), ("data", result_data, None)],
            bases=(Accepted,),
            tag="accepted",
            kw_only=True,
        )
        self.result_type: Any = accepted | Rejected
        dedup_entry = msgspec.defstruct(
            "DedupEntry", [("result", self.result_type)], bases=(DedupEntry,), array_like=True
        )
        body = msgspec.defstruct("SnapshotBody", [("dedup", list[dedup_entry])], bases=(SnapshotBody,))  # type: ignore[valid-type]
        # `deterministic` sorts dict keys, so equal states encode to equal bytes.
        self.encoder = msgspec.msgpack.Encoder(order="deterministic")
        self.snapshot_encoder = self.encoder
        self.command_decoder: Any = msgspec.msgpack.Decoder(self.command_type)
        self.event_decoder: Any = msgspec.msgpack.Decoder(self.event_type)
        self.result_decoder: Any = msgspec.msgpack.Decoder(self.result_type)
        self.snapshot_decoder: Any = msgspec.msgpack.Decoder(body)

    def encode(self, obj: Any) -> bytes:
        return self.encoder.encode(obj)


def _union(types: tuple[type, ...]) -> Any:
    assert types, "no types to build a union from"
    out: Any = types[0]
    for t in types[1:]:
        out = out | t
    return out

"""The one node executor: store + replicated application + consensus core, for every driver.

The daemon (libp2p, trio), the in-process engine (``sims/inproc.py``) and the fault campaign
(``sims/simnet.py``) all run :class:`Executor` — the daemon and the engine through
:class:`NodeRuntime`, which only boots it with the ledger (:class:`~gridnode.core.app.LedgerApp`)
from a genesis. It has no sockets and no clock of its own: the driver calls :meth:`Executor.start`,
:meth:`~Executor.on_message`, :meth:`~Executor.on_timer` and :meth:`~Executor.submit` with ``now``
(unix ms of the node's clock) and provides an :class:`Outbox` that carries bytes and sets timers.

**The driver contract** (etcd raft's ``Ready``/``Advance``, written once, in :func:`plan`). Each
call into the consensus core returns an ordered list of effects; :func:`plan` turns it into the
ordered list of :class:`Action` s the executor carries out, one :class:`Duty` each, and nothing
else decides an order:

1. effects are carried out **in the order the core emitted them** (a ``Persist`` before the vote it
   protects, a decision before the next height's first message);
2. ``Persist(record)`` → ``PERSIST``: written durably before anything after it — a signed record
   with :meth:`Store.append_signed` (WAL + last-signed in one transaction), a lock record with
   :meth:`Store.append_wal`;
3. ``Broadcast`` / ``Send`` → ``SEND``: the message's canonical bytes to the outbox;
   ``SetTimer`` → ``TIMER``;
4. ``Decided(h, block, commit)`` → ``STORE`` (block + commit, durable) **before** ``APPLY`` (the
   application), then ``TRUNCATE`` (the WAL below h+1; nothing on a full node, which writes no
   WAL: that durable write was half a household's store time per block), then ``SNAPSHOT``
   (every ``snapshot_every`` heights, the application's state bytes), then ``NOTIFY`` (observers and listeners: only a block
   that is stored and applied is ever announced, so nothing acknowledged is lost by a crash);
5. ``EvidenceFound`` → ``EVIDENCE`` (counted, the latest kept in :attr:`Executor.recent_evidence`); ``ProposalRefused`` → ``REFUSED`` (logged on the
   ``gridnode.node`` logger with the application's reason, counted in :attr:`Executor.refused`).

A committed block that breaks an application rule despite a valid commit (impossible with < 1/3
Byzantine validators) stops the node with :class:`LedgerHalted`: continuing would fork.

**Boot** follows the store's recovery contract (:func:`gridnode.store.recover`): the application
restores the latest snapshot and applies the blocks after it; a validator's consensus core is
restored from its WAL and last-signed record, so it never signs twice.

**Peers' bytes are never trusted**: an undecodable consensus message counts as misbehaviour of its
sender (:attr:`Executor.misbehaviour`) and is dropped; nothing a peer sends can raise out of
:meth:`Executor.on_message`.

**Hooks** (harnesses only; the daemon sets none): :attr:`Executor.plan_hooks` may cut or reorder a
step's actions before they run (the campaign's torn crash — ``kill -9`` after ``k`` actions — and
its planted bugs; a step without effects has no actions, and runs no hook),
:attr:`Executor.observers` see every action after it ran (the campaign's checks).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gridnode.core.app import LedgerApp
from gridnode.core.consensus import (
    EVIDENCE_KEPT,
    Application,
    Backlog,
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Effect,
    EvidenceFound,
    FullNode,
    Persist,
    ProposalRefused,
    Send,
    SetTimer,
    SignedRecord,
    TimerKind,
    WalRecord,
    decode_wal_record,
    encode_wal_record,
)
from gridnode.core.consensus_messages import (
    ConsensusMessage,
    Evidence,
    SyncedBlock,
    ValidatorSet,
    decode_commit,
    decode_message,
    encode_commit,
    encode_message,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Block, Genesis, LedgerState
from gridnode.core.mempool import AddResult
from gridnode.store import Store, recover
from market.errors import GridnodeError, InvalidInput

__all__ = [
    "Action",
    "Committed",
    "Duty",
    "Executor",
    "LedgerHalted",
    "NodeApp",
    "NodeRuntime",
    "Outbox",
    "StoreBlocks",
    "plan",
]

log = logging.getLogger("gridnode.node")

#: a shared cache of decoded consensus messages (see :class:`Executor`) is emptied at this size
DECODED_KEPT = 512


class LedgerHalted(GridnodeError):
    """A committed block broke an application rule: the node stops rather than fork."""


class Outbox(Protocol):
    """What the driver does for the node."""

    def broadcast(self, data: bytes) -> None:
        """Send consensus bytes to every other validator."""

    def send(self, to: str, data: bytes) -> None:
        """Send consensus bytes to one node, named by its public key hex."""

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        """Call :meth:`Executor.on_timer` with these arguments at ``at_ms`` (node clock)."""


class NodeApp(Application, Protocol):
    """The replicated application an executor runs (the ledger's ``LedgerApp``, the campaign's
    ``SimApp``): consensus' :class:`~gridnode.core.consensus.Application` plus these."""

    def apply(self, height: int, block: bytes) -> object:
        """Apply a committed block; raise :class:`InvalidInput` if it breaks a rule."""
        ...

    def submit(self, tx: Any, *, now_ms: int | None = None) -> AddResult:
        """Offer a transaction to the mempool (as of ``now_ms`` if given)."""
        ...

    def offer(self, tx: Any, *, now_ms: int | None = None) -> str | None:
        """:meth:`submit` answering ``None`` (accepted) or the rejection reason."""
        ...

    def backlog_full(self) -> bool:
        """Whether :meth:`backlog` would say ``full``."""
        ...

    def snapshot(self) -> bytes:
        """The committed state's bytes (stored every ``snapshot_every`` heights)."""
        ...

    def backlog(self) -> Backlog:
        """What waits for the next block (adaptive cadence,
        :meth:`~gridnode.core.consensus.Consensus.on_backlog`)."""
        ...

    def restore(self, data: bytes) -> None:
        """Start from :meth:`snapshot` bytes (called at boot, before any block is applied)."""
        ...


AppT = TypeVar("AppT", bound=NodeApp)


class StoreBlocks:
    """Serves committed blocks from a :class:`~gridnode.store.Store` to the consensus core."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def committed(self, height: int) -> SyncedBlock | None:
        sb = self._store.block(height)
        if sb is None:
            return None
        return SyncedBlock(sb.height, sb.block, decode_commit(sb.commit))


# --- the driver contract ------------------------------------------------------------------------


class Duty(enum.Enum):
    """One thing the executor does for an effect (see the module's driver contract)."""

    PERSIST = "persist"
    SEND = "send"
    TIMER = "timer"
    STORE = "store"
    APPLY = "apply"
    TRUNCATE = "truncate"
    SNAPSHOT = "snapshot"
    NOTIFY = "notify"
    EVIDENCE = "evidence"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Action:
    duty: Duty
    effect: Effect


def plan(effects: Sequence[Effect], *, snapshot_every: int) -> list[Action]:
    """The driver contract: the actions that carry out ``effects``, in the order to run them."""
    out: list[Action] = []
    for eff in effects:
        if isinstance(eff, Persist):
            out.append(Action(Duty.PERSIST, eff))
        elif isinstance(eff, Broadcast | Send):
            out.append(Action(Duty.SEND, eff))
        elif isinstance(eff, SetTimer):
            out.append(Action(Duty.TIMER, eff))
        elif isinstance(eff, Decided):
            out += [Action(Duty.STORE, eff), Action(Duty.APPLY, eff), Action(Duty.TRUNCATE, eff)]
            if snapshot_every and eff.height % snapshot_every == 0:
                out.append(Action(Duty.SNAPSHOT, eff))
            out.append(Action(Duty.NOTIFY, eff))
        elif isinstance(eff, EvidenceFound):
            out.append(Action(Duty.EVIDENCE, eff))
        else:
            out.append(Action(Duty.REFUSED, eff))
    return out


#: Cuts or reorders one step's actions before they run (harnesses only: torn crashes, planted bugs).
PlanHook = Callable[[list[Action]], list[Action]]


# --- the executor -------------------------------------------------------------------------------


class Executor(Generic[AppT]):
    """See the module rules: carries out the consensus core's effects by :func:`plan`."""

    def __init__(
        self,
        *,
        app: AppT,
        validators: ValidatorSet,
        key: KeyPair | None,
        store: Store,
        outbox: Outbox,
        validator: bool,
        sync_peers: Sequence[str],
        config: ConsensusConfig | None = None,
        snapshot_every: int = 100,
        decoded: dict[bytes, ConsensusMessage] | None = None,
    ) -> None:
        self.app = app
        #: consensus bytes -> the message they decode to. Only a simulation running many nodes in
        #: one process shares one: every validator receives the same broadcast bytes, and decoding
        #: is a function of the bytes alone (messages are immutable; undecodable bytes are never
        #: cached, so each node still counts them against their sender). Per-node CPU is then not
        #: modelled. Emptied at ``DECODED_KEPT`` entries.
        self.decoded = decoded
        self.validators = validators
        self.key = key
        self.store = store
        self.outbox = outbox
        self.snapshot_every = snapshot_every
        self.misbehaviour: dict[str, dict[str, int]] = {}
        self.evidence = 0
        #: the latest equivocation evidence seen (bounded), oldest first: the API shows it
        self.recent_evidence: deque[Evidence] = deque(maxlen=EVIDENCE_KEPT)
        #: proposals this node refused to vote for, by the application's reason
        self.refused: dict[str, int] = {}
        self.last_heard_ms: dict[str, int] = {}
        self.plan_hooks: list[PlanHook] = []
        self.observers: list[Callable[[Action], None]] = []
        rec = recover(store)
        if rec.snapshot is not None:
            app.restore(rec.snapshot.state)
        for sb in rec.blocks:
            self._apply(sb.height, sb.block)
        height = rec.head.height + 1 if rec.head is not None else 1
        blocks = StoreBlocks(store)
        self.is_validator = (
            validator and key is not None and validators.index_of(key.public_key) is not None
        )
        self.core: Consensus | FullNode
        if self.is_validator:
            assert key is not None
            wal: list[WalRecord] = [decode_wal_record(w.record) for w in rec.wal]
            if rec.last_signed is not None:
                wal.append(decode_wal_record(rec.last_signed.vote))
            self.core = Consensus.recover(
                validators=validators,
                key=key,
                app=app,
                blocks=blocks,
                height=height,
                wal=wal,
                config=config,
            )
        else:
            self.core = FullNode(
                validators=validators, peers=sync_peers, blocks=blocks, height=height, config=config
            )

    # ------------------------------------------------------------------ inputs
    def start(self, now: int) -> None:
        self._run(self.core.start(now), now)

    def on_timer(self, kind: TimerKind, height: int, round_: int, now: int) -> None:
        self._run(self.core.on_timer(kind, height, round_, now), now)

    def on_message(self, sender: str, data: bytes, now: int) -> None:
        cache = self.decoded
        msg = None if cache is None else cache.get(data)
        if msg is None:
            try:
                msg = decode_message(data)
            except InvalidInput as exc:
                self.count(sender, exc.reason)
                return
            if cache is not None:
                if len(cache) >= DECODED_KEPT:
                    cache.clear()
                cache[data] = msg
        self.last_heard_ms[sender] = now
        self._run(self.core.on_message(sender, msg, now), now)

    def submit(self, tx: Any, now: int) -> AddResult:
        """Offer a transaction to this node's mempool (and, with adaptive cadence, tell the
        consensus core about the backlog: it may start the next height sooner)."""
        result = self.app.submit(tx, now_ms=now)
        if result.accepted:
            self._admitted(now)
        return result

    def offer(self, tx: Any, now: int) -> str | None:
        """:meth:`submit` answering ``None`` (accepted) or the rejection reason, without a result
        object (a simulation offers every transaction to every validator)."""
        reason = self.app.offer(tx, now_ms=now)
        if reason is None:
            self._admitted(now)
        return reason

    def _admitted(self, now: int) -> None:
        """A transaction was admitted: report the backlog if that can move the next height."""
        core = self.core
        if isinstance(core, Consensus):
            wanted = core.backlog_wanted()  # 1: told already, only a full backlog changes something
            if wanted == 2 or (wanted == 1 and self.app.backlog_full()):
                self._run(core.on_backlog(self.app.backlog(), now), now)

    def _report_backlog(self, now: int) -> None:
        core = self.core
        if isinstance(core, Consensus) and core.waiting_for_work:
            self._run(core.on_backlog(self.app.backlog(), now), now)

    def count(self, peer: str, reason: str) -> None:
        by = self.misbehaviour.setdefault(peer, {})
        by[reason] = by.get(reason, 0) + 1

    # ------------------------------------------------------------------ the contract, carried out
    def _run(self, effects: list[Effect], now: int | None = None) -> None:
        if not effects:  # nothing to carry out (hooks only cut or reorder: nothing for them)
            return
        actions = plan(effects, snapshot_every=self.snapshot_every)
        for hook in self.plan_hooks:
            actions = hook(actions)
        applied = False
        for action in actions:
            self._carry_out(action)
            applied = applied or action.duty is Duty.APPLY
            for observe in self.observers:
                observe(action)
        if applied and now is not None:  # what is left pending may start the next height sooner
            self._report_backlog(now)

    def _carry_out(self, action: Action) -> None:
        duty, eff = action.duty, action.effect
        if duty is Duty.SEND:
            if isinstance(eff, Broadcast):
                self.outbox.broadcast(encode_message(eff.message))
            elif isinstance(eff, Send):
                self.outbox.send(eff.to, encode_message(eff.message))
        elif duty is Duty.TIMER:
            assert isinstance(eff, SetTimer)
            self.outbox.set_timer(eff.at, eff.kind, eff.height, eff.round)
        elif duty is Duty.PERSIST:
            assert isinstance(eff, Persist)
            self._persist(eff.record)
        elif isinstance(eff, Decided):
            if duty is Duty.STORE:
                commit = encode_commit(eff.commit)
                self.store.put_block(eff.height, eff.commit.block_hash, eff.block, commit)
            elif duty is Duty.APPLY:
                self._apply(eff.height, eff.block)
            elif duty is Duty.TRUNCATE and self.is_validator:  # a full node writes no WAL
                self.store.truncate_wal(eff.height + 1)
            elif duty is Duty.SNAPSHOT:
                self.store.put_snapshot(eff.height, self.app.snapshot())
            # NOTIFY: nothing to do here; observers run after every action
        elif duty is Duty.EVIDENCE:
            assert isinstance(eff, EvidenceFound)
            self.evidence += 1
            self.recent_evidence.append(eff.evidence)
        elif isinstance(eff, ProposalRefused):
            self.refused[eff.reason] = self.refused.get(eff.reason, 0) + 1
            log.info(
                "refused proposal at height %d round %d (proposer %d, block %s): %s",
                eff.height,
                eff.round,
                eff.proposer,
                eff.block_hash.hex()[:12],
                eff.detail,
            )

    def _persist(self, record: WalRecord) -> None:
        data = encode_wal_record(record)
        if isinstance(record, SignedRecord):  # WAL + last-signed in one durable transaction
            self.store.append_signed(record.height, record.round, int(record.step), data)
        else:
            self.store.append_wal(record.height, data)

    def _apply(self, height: int, block: bytes) -> None:
        try:
            self.app.apply(height, block)
        except InvalidInput as exc:
            raise LedgerHalted(f"committed block {height} breaks a ledger rule: {exc}") from exc


# --- the ledger node ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Committed:
    """Handed to :attr:`NodeRuntime.listeners` after a block is stored and applied."""

    height: int
    block_hash: bytes
    state: LedgerState
    block: Block  # the block, decoded (listeners need not decode the stored bytes again)


class NodeRuntime(Executor[LedgerApp]):
    """The ledger node the daemon and the in-process engine run: the :class:`Executor` booted
    with a :class:`LedgerApp` from ``genesis`` (this class only builds it; it overrides nothing).
    """

    def __init__(
        self,
        *,
        genesis: Genesis,
        key: KeyPair,
        store: Store,
        outbox: Outbox,
        validator: bool,
        config: ConsensusConfig | None = None,
        snapshot_every: int = 100,
        sync_peers: Sequence[str] | None = None,
        max_block_txs: int = 2_000,
        max_block_bytes: int = 2 * 1024 * 1024,
        verified: set[bytes] | None = None,
        shared_blocks: dict[tuple[bytes, bytes], tuple[Block, LedgerState]] | None = None,
        verified_votes: set[tuple[int, str, bytes, bytes]] | None = None,
        shared_admission: dict[tuple[int, bytes, bytes, int], str | None] | None = None,
        decoded: dict[bytes, ConsensusMessage] | None = None,
        mempool_capacity: int = 100_000,
    ) -> None:
        self.genesis = genesis
        self.listeners: list[Callable[[Committed], None]] = []
        app = LedgerApp(
            genesis,
            proposer=key.public_hex,
            max_block_txs=max_block_txs,
            max_block_bytes=max_block_bytes,
            verified=verified,
            shared_blocks=shared_blocks,
            shared_admission=shared_admission,
            mempool_capacity=mempool_capacity,
        )
        super().__init__(
            app=app,
            validators=ValidatorSet(
                tuple(bytes.fromhex(v) for v in genesis.validators), verified=verified_votes
            ),
            key=key,
            store=store,
            outbox=outbox,
            validator=validator,
            sync_peers=list(sync_peers) if sync_peers else list(genesis.validators),
            config=config,
            snapshot_every=snapshot_every,
            decoded=decoded,
        )
        self.observers.append(self._announce)

    @property
    def state(self) -> LedgerState:
        return self.app.state

    def _announce(self, action: Action) -> None:
        if action.duty is Duty.NOTIFY and self.listeners:
            eff = action.effect
            assert isinstance(eff, Decided) and self.app.last_applied is not None
            event = Committed(
                eff.height, eff.commit.block_hash, self.app.state, self.app.last_applied
            )
            for listener in self.listeners:
                listener(event)

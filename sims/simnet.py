"""In-process simulated network and virtual clock that drive many consensus cores.

Rules of this module:

* One :class:`Simulation` owns a virtual clock (integer ms), an event heap ordered by
  ``(time, sequence)`` and one seeded ``random.Random``; every random choice (delays, drops, faults,
  Byzantine choices, transactions) is drawn from it in event order, so a seed gives a
  byte-identical transcript (:attr:`RunResult.transcript_sha256`) on every run and platform.
  Nothing here iterates over a ``set`` of bytes/str (hash order varies between processes).
* Messages travel as their canonical bytes (:func:`encode_message`) and are decoded on delivery.
  A node's effects are carried out in the order the core emitted them: ``Persist`` goes to the
  node's :class:`NodeStore` before any later ``Broadcast``/``Send`` leaves.
* Faults (each switchable, see :class:`Faults`) are active during ``[0, fault_until_ms)``; after
  that the network is reliable and every crashed node restarts, so the run can check that blocks
  commit again within a bound. Byzantine validators stay Byzantine for the whole run.
* Crashes may be *torn*: the crashed node's next step executes only its first ``k`` effects (a
  ``kill -9`` in the middle of a step). A restart rebuilds the node only from its store: committed
  blocks (the application state is replayed from them) and the WAL (last signed step and lock).
  :class:`MemoryStore` is the in-memory stand-in for the SQLite store (same interface).
* Clock skew: node ``i`` reads ``global_now + skew_i``; its timers are converted back.
* :class:`SimApp` is a small replicated application (signed opaque transactions, a monotonic block
  time within a bound of the validator's clock, no transaction committed twice) so consensus can be
  exercised without the ledger; the ledger plugs in through the same :class:`Application` protocol.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gridnode.core.consensus import (
    Application,
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Effect,
    EvidenceFound,
    FullNode,
    Persist,
    Send,
    SetTimer,
    SignedRecord,
    WalRecord,
    decode_wal_record,
    encode_wal_record,
)
from gridnode.core.consensus_messages import (
    NIL,
    ConsensusMessage,
    Proposal,
    SyncedBlock,
    ValidatorSet,
    Vote,
    VoteType,
    decode_commit,
    decode_message,
    encode_commit,
    encode_message,
    sign_proposal,
    sign_vote,
    verify_commit,
)
from gridnode.core.crypto import KeyPair, verify
from gridnode.core.mempool import Mempool
from gridnode.store import MemoryStore, Store, recover
from market.codec import pack, unpack
from market.errors import InvalidInput

__all__ = [
    "FAULT_NAMES",
    "Faults",
    "RunResult",
    "SimApp",
    "SimApplication",
    "SimTx",
    "Simulation",
    "StoreBlocks",
    "TxSource",
    "Violation",
    "make_tx",
]

FAULT_NAMES: Final = (
    "drop",
    "delay",
    "duplicate",
    "partition",
    "asymmetric",
    "crash",
    "skew",
    "byzantine",
)
TX_DOMAIN: Final = "simtx"


# --- storage ----------------------------------------------------------------------------------


class StoreBlocks:
    """Serves committed blocks from a :class:`gridnode.store.Store` as a consensus BlockSource."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def committed(self, height: int) -> SyncedBlock | None:
        sb = self.store.block(height)
        if sb is None:
            return None
        return SyncedBlock(sb.height, sb.block, decode_commit(sb.commit))


# --- the application interface -----------------------------------------------------------------


class SimApplication(Application, Protocol):
    """What the simulation needs from a replicated application (the ledger's ``LedgerApp`` too).

    ``apply`` raises :class:`InvalidInput` when a committed block breaks a rule (reported as a
    violation); ``submit`` offers a transaction to the node's mempool. An optional
    ``block_tx_ids(block) -> list[bytes]`` (the ids of a block's transactions) enables the commit
    latency figures.
    """

    def apply(self, height: int, block: bytes) -> object: ...

    def submit(self, tx: Any) -> object: ...


#: ``(rng, now_ms) -> (tx_id, tx)`` or ``None``: the clients' next transaction.
TxSource = Callable[[random.Random, int], "tuple[bytes, Any] | None"]


# --- the test application -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimTx:
    """A signed opaque transaction: ``body = pack(["gn.simtx", client, nonce, payload])``."""

    body: bytes
    signature: bytes

    @property
    def tx_id(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def encoded(self) -> list[bytes]:
        return [self.body, self.signature]


def make_tx(key: KeyPair, nonce: int, payload: bytes) -> SimTx:
    body = pack(["gn.simtx", key.public_key, nonce, payload])
    return SimTx(body, key.sign(TX_DOMAIN, body))


def _tx_ok(tx: SimTx) -> bool:
    try:
        tag, client, _nonce, _payload = unpack(tx.body, what="simtx")
    except (InvalidInput, ValueError):
        return False
    return (
        tag == "gn.simtx"
        and isinstance(client, bytes)
        and verify(client, TX_DOMAIN, tx.body, tx.signature)
    )


class SimApp:
    """A replicated log of signed transactions (see the module rules). Counts signature checks."""

    def __init__(
        self, *, time_bound_ms: int = 10_000, max_block_txs: int = 200, sig_counter: list[int]
    ) -> None:
        self.height = 0
        self.last_time = -(10**18)
        self.committed_ids: dict[bytes, int] = {}
        self.tx_count = 0
        self._bound = time_bound_ms
        self._max_txs = max_block_txs
        self._sigs = sig_counter
        self.mempool: Mempool[SimTx] = Mempool(
            tx_id=lambda t: t.tx_id, check=self._check_tx, size=lambda t: len(t.body) + 64
        )

    def submit(self, tx: SimTx) -> object:
        return self.mempool.add(tx)

    def block_tx_ids(self, block: bytes) -> list[bytes]:
        try:
            value = unpack(block, what="block", max_bytes=8 << 20)
            return [hashlib.sha256(bytes(item[0])).digest() for item in value[4]]
        except (InvalidInput, ValueError, TypeError, IndexError):
            return []

    def _check_tx(self, tx: SimTx) -> str | None:
        if tx.tx_id in self.committed_ids:
            return "committed"
        self._sigs[0] += 1
        return None if _tx_ok(tx) else "bad_signature"

    def make_block(self, height: int, round_: int, now: int) -> bytes:
        del round_
        txs = self.mempool.batch(max_count=self._max_txs, max_bytes=1 << 20)
        return pack(["gn.simblock", 1, height, now, [t.encoded() for t in txs]])

    def _parse(self, height: int, block: bytes) -> tuple[int, list[SimTx]]:
        what = f"block {height}"
        try:
            tag, version, h, t, txs = unpack(block, what=what, max_bytes=8 << 20)
        except ValueError as exc:
            raise InvalidInput(reason="malformed", subject=what) from exc
        if tag != "gn.simblock" or version != 1 or h != height or not isinstance(t, int):
            raise InvalidInput(reason="bad_header", subject=what)
        if height != self.height + 1:
            raise InvalidInput(
                reason="not_next", subject=what, expected=str(self.height + 1), found=str(height)
            )
        if t <= self.last_time:
            raise InvalidInput(reason="time_not_monotonic", subject=what)
        out: list[SimTx] = []
        seen: set[bytes] = set()
        for item in txs:
            if not (isinstance(item, list) and len(item) == 2):
                raise InvalidInput(reason="bad_tx", subject=what)
            tx = SimTx(bytes(item[0]), bytes(item[1]))
            tid = tx.tx_id
            if tid in seen or tid in self.committed_ids:
                raise InvalidInput(reason="replayed_tx", subject=what, found=tid.hex()[:16])
            seen.add(tid)
            self._sigs[0] += 1
            if not _tx_ok(tx):
                raise InvalidInput(reason="bad_tx_signature", subject=what)
            out.append(tx)
        return t, out

    def validate_block(self, height: int, block: bytes, now: int) -> bool:
        try:
            t, _ = self._parse(height, block)
        except InvalidInput:
            return False
        return abs(t - now) <= self._bound

    def apply(self, height: int, block: bytes) -> None:
        """Apply a committed block; raises :class:`InvalidInput` if it breaks a rule."""
        t, txs = self._parse(height, block)
        self.height = height
        self.last_time = t
        for tx in txs:
            self.committed_ids[tx.tx_id] = height
        self.tx_count += len(txs)
        self.mempool.remove_committed(tx.tx_id for tx in txs)


# --- faults and results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """Which faults to inject (names from :data:`FAULT_NAMES`) and how hard."""

    enabled: frozenset[str] = frozenset()
    drop_probability: float = 0.05
    duplicate_probability: float = 0.05
    delay_ms: tuple[int, int] = (2, 30)
    long_delay_ms: int = 600
    long_delay_probability: float = 0.05
    partition_every_ms: tuple[int, int] = (1_000, 4_000)
    partition_length_ms: tuple[int, int] = (300, 3_000)
    crash_every_ms: tuple[int, int] = (1_000, 4_000)
    crash_length_ms: tuple[int, int] = (100, 3_000)
    max_skew_ms: int = 500
    byzantine: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(self.enabled - set(FAULT_NAMES))
        if unknown:
            raise InvalidInput(
                reason="unknown_fault",
                subject="faults",
                expected=", ".join(FAULT_NAMES),
                found=", ".join(unknown),
            )

    def on(self, name: str) -> bool:
        return name in self.enabled


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    detail: str


@dataclass(slots=True)
class RunResult:
    seed: int
    heights: int = 0
    partitions: int = 0
    crashes: int = 0
    torn_crashes: int = 0
    byzantine_events: int = 0
    evidence: int = 0
    refused_signatures: int = 0
    messages: int = 0
    dropped: int = 0
    committed_txs: int = 0
    signature_checks: int = 0
    violations: list[Violation] = field(default_factory=list)
    transcript_sha256: str = ""
    #: ``decided[node][height] = block hash`` for every honest node.
    decided: dict[str, dict[int, bytes]] = field(default_factory=dict)
    commit_latency_ms: list[int] = field(default_factory=list)


# --- nodes ------------------------------------------------------------------------------------


class _HonestNode:
    def __init__(self, sim: Simulation, name: str, key: KeyPair | None, skew_ms: int) -> None:
        self.sim = sim
        self.name = name
        self.key = key
        self.skew = skew_ms
        self.alive = True
        self.incarnation = 0
        self.tear_at: int | None = None
        self.decided: dict[int, bytes] = {}
        self.store = sim.open_store(name)
        self.app, self.core = self._boot()

    def _boot(self) -> tuple[SimApplication, Consensus | FullNode]:
        """Build the application and the core from the store only (the recovery contract)."""
        rec = recover(self.store)
        app = self.sim.make_app(self.name)
        for sb in rec.blocks:
            try:
                app.apply(sb.height, sb.block)
            except InvalidInput:  # already reported as a violation when it was decided
                _skip_block(app, sb.height)
        h = rec.head.height + 1 if rec.head is not None else 1
        blocks = StoreBlocks(self.store)
        if self.key is None:
            return app, FullNode(
                validators=self.sim.validators,
                peers=self.sim.validator_names,
                blocks=blocks,
                height=h,
                config=self.sim.config,
            )
        wal: list[WalRecord] = [decode_wal_record(w.record) for w in rec.wal]
        if rec.last_signed is not None:
            wal.append(decode_wal_record(rec.last_signed.vote))
        core = Consensus.recover(
            validators=self.sim.validators,
            key=self.key,
            app=app,
            blocks=blocks,
            height=h,
            wal=wal,
            config=self.sim.config,
        )
        return app, core

    def persist(self, record: WalRecord) -> None:
        if isinstance(record, SignedRecord):
            # the "vote" column holds the whole record: a nil vote's value is empty bytes
            data = encode_wal_record(record)
            self.store.append_wal(record.height, data)  # every vote, to re-send after a crash
            self.store.save_last_signed(record.height, record.round, int(record.step), data)
        else:
            self.store.append_wal(record.height, encode_wal_record(record))

    def restart(self) -> None:
        self.store.close()
        self.store = self.sim.open_store(self.name)
        self.app, self.core = self._boot()
        self.alive = True
        self.incarnation += 1
        self.tear_at = None

    def now(self) -> int:
        return self.sim.epoch_ms + self.sim.now + self.skew


class _Byzantine:
    """A coalition member: equivocates as proposer and echoes each honest half's votes to it."""

    def __init__(self, sim: Simulation, name: str, index: int, key: KeyPair) -> None:
        self.sim = sim
        self.name = name
        self.index = index
        self.key = key
        self.proposed: dict[tuple[int, int], None] = {}
        self.echoed: dict[tuple[int, int, int, bytes, int], None] = {}

    def on_message(self, sender: str, msg: ConsensusMessage) -> None:
        sim = self.sim
        if not isinstance(msg, Proposal | Vote):
            return
        h, r = msg.height, msg.round
        # propose early for this round, the next round and the next height: honest nodes keep
        # proposals for later rounds and buffer the next height's messages
        for ph, pr in ((h, r), (h, r + 1), (h + 1, 0)):
            if sim.validators.proposer(ph, pr) == self.index and (ph, pr) not in self.proposed:
                self.proposed[(ph, pr)] = None
                self._equivocate(ph, pr)
        if isinstance(msg, Vote) and sender in sim.half_of:
            side = sim.half_of[sender]
            key = (h, r, int(msg.vote_type), msg.block_hash, side)
            if key in self.echoed:
                return
            self.echoed[key] = None
            vote = sign_vote(
                self.key,
                vote_type=msg.vote_type,
                height=h,
                round_=r,
                value=msg.block_hash,
                validator=self.index,
            )
            everyone = sim.rng.random() < 0.3
            targets = sim.honest_validators if everyone else sim.halves[side]
            sim.byzantine_events += 1
            for dst in targets:
                sim.transmit(self.name, dst, encode_message(vote))
            if msg.vote_type is VoteType.PREVOTE and msg.block_hash != NIL:
                # also precommit what this half prevoted: the half can then decide on its own
                pc = sign_vote(
                    self.key,
                    vote_type=VoteType.PRECOMMIT,
                    height=h,
                    round_=r,
                    value=msg.block_hash,
                    validator=self.index,
                )
                for dst in sim.halves[side]:
                    sim.transmit(self.name, dst, encode_message(pc))

    def _equivocate(self, h: int, r: int) -> None:
        sim = self.sim
        sim.byzantine_events += 1
        t = sim.epoch_ms + sim.now
        if sim.rng.random() < 0.2:  # an invalid block (wrong height), to everyone
            bad = pack(["gn.simblock", 1, h + 7, t, []])
            prop = sign_proposal(
                self.key, height=h, round_=r, block=bad, valid_round=-1, proposer=self.index
            )
            for dst in sim.honest_validators:
                sim.transmit(self.name, dst, encode_message(prop))
            return
        for side, members in enumerate(sim.halves):
            block = pack(["gn.simblock", 1, h, t + side, []])
            prop = sign_proposal(
                self.key, height=h, round_=r, block=block, valid_round=-1, proposer=self.index
            )
            for dst in members:
                sim.transmit(self.name, dst, encode_message(prop))


# --- the simulation ----------------------------------------------------------------------------


class Simulation:
    """N validators (some Byzantine) and full nodes over a faulty simulated network."""

    def __init__(
        self,
        *,
        seed: int,
        validators: int = 4,
        full_nodes: int = 1,
        faults: Faults | None = None,
        config: ConsensusConfig | None = None,
        clients: int = 3,
        store_factory: Callable[[str], Store] | None = None,
        app_factory: Callable[[str], SimApplication] | None = None,
        tx_source: TxSource | None = None,
        epoch_ms: int = 0,
        validator_keys: Sequence[KeyPair] | None = None,
        tx_interval_ms: int = 150,
        max_block_txs: int = 200,
    ) -> None:
        self.seed = seed
        self._store_factory = store_factory
        self._app_factory = app_factory
        self.epoch_ms = epoch_ms
        self._memory_stores: dict[str, MemoryStore] = {}
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.config = config or ConsensusConfig()
        self.max_block_txs = max_block_txs
        self.now = 0
        self._heap: list[tuple[int, int, tuple[Any, ...]]] = []
        self._seq = 0
        self._transcript = hashlib.sha256()
        self.sig_counter = [0]
        self.byzantine_events = 0
        self.result = RunResult(seed=seed)
        keys = (
            list(validator_keys)
            if validator_keys is not None
            else [KeyPair.from_rng(self.rng) for _ in range(validators)]
        )
        validators = len(keys)
        self.validators = ValidatorSet(tuple(k.public_key for k in keys))
        self.validator_names = tuple(f"v{i}" for i in range(validators))
        n_byz = self.faults.byzantine if self.faults.on("byzantine") else 0
        byz_idx = sorted(self.rng.sample(range(validators), n_byz))
        skew = self.faults.max_skew_ms if self.faults.on("skew") else 0
        self.nodes: dict[str, _HonestNode] = {}
        self.byzantine: dict[str, _Byzantine] = {}
        for i, k in enumerate(keys):
            name = self.validator_names[i]
            if i in byz_idx:
                self.byzantine[name] = _Byzantine(self, name, i, k)
            else:
                self.nodes[name] = _HonestNode(self, name, k, self.rng.randint(-skew, skew))
        for j in range(full_nodes):
            self.nodes[f"f{j}"] = _HonestNode(self, f"f{j}", None, self.rng.randint(-skew, skew))
        self.honest_validators = tuple(n for n in self.validator_names if n in self.nodes)
        shuffled = list(self.honest_validators)
        self.rng.shuffle(shuffled)
        cut = max(1, len(shuffled) // 2)
        self.halves: tuple[tuple[str, ...], tuple[str, ...]] = (
            tuple(sorted(shuffled[:cut])),
            tuple(sorted(shuffled[cut:])),
        )
        self.half_of = {name: side for side, half in enumerate(self.halves) for name in half}
        self.blocked: set[tuple[str, str]] = set()
        self._fault_until = 0
        self._client_keys = [KeyPair.from_rng(self.rng) for _ in range(clients)]
        self._client_nonce = [0] * clients
        self._tx_interval = tx_interval_ms
        self._tx_submitted_at: dict[bytes, int] = {}
        self._down: list[str] = []
        self._tx_source: TxSource = tx_source or self._sim_tx

    def open_store(self, name: str) -> Store:
        """Open node ``name``'s store; opening again after a crash must give the same data."""
        if self._store_factory is not None:
            return self._store_factory(name)
        store = self._memory_stores.get(name)
        if store is None:
            store = self._memory_stores[name] = MemoryStore()
            return store
        return store.reopen()

    # -- scheduling -------------------------------------------------------------------------------

    def _push(self, at: int, event: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, event))

    def _faulty(self, name: str) -> bool:
        return self.now < self._fault_until and self.faults.on(name)

    def transmit(self, src: str, dst: str, data: bytes) -> None:
        """Put one message on the wire from ``src`` to ``dst`` (subject to the active faults)."""
        self.result.messages += 1
        if (src, dst) in self.blocked or (
            self._faulty("drop") and self.rng.random() < self.faults.drop_probability
        ):
            self.result.dropped += 1
            return
        copies = (
            2
            if (self._faulty("duplicate") and self.rng.random() < self.faults.duplicate_probability)
            else 1
        )
        for _ in range(copies):
            if self._faulty("delay"):
                lo, hi = self.faults.delay_ms
                delay = self.rng.randint(lo, hi)
                if self.rng.random() < self.faults.long_delay_probability:
                    delay += self.rng.randint(0, self.faults.long_delay_ms)
            else:
                delay = 2 + self.rng.randint(0, 3)
            self._push(self.now + delay, ("deliver", dst, src, data))

    def _run_effects(self, node: _HonestNode, effects: list[Effect]) -> None:
        if node.tear_at is not None:
            effects = effects[: node.tear_at]
        for eff in effects:
            if isinstance(eff, Persist):
                node.persist(eff.record)
            elif isinstance(eff, Broadcast):
                data = encode_message(eff.message)
                for dst in self.validator_names:
                    if dst != node.name:
                        self.transmit(node.name, dst, data)
            elif isinstance(eff, Send):
                self.transmit(node.name, eff.to, encode_message(eff.message))
            elif isinstance(eff, SetTimer):
                at = max(self.now, eff.at - node.skew - self.epoch_ms)
                self._push(
                    at, ("timer", node.name, node.incarnation, eff.kind, eff.height, eff.round)
                )
            elif isinstance(eff, Decided):
                self._decided(node, eff)
            elif isinstance(eff, EvidenceFound):
                self.result.evidence += 1
        if node.tear_at is not None:
            node.tear_at = None
            self._crash(node)

    def _decided(self, node: _HonestNode, eff: Decided) -> None:
        self._transcript.update(
            pack(["decided", self.now, node.name, eff.height, eff.commit.block_hash])
        )
        try:
            verify_commit(self.validators, eff.commit, eff.block, height=eff.height)
        except InvalidInput as exc:
            self.result.violations.append(
                Violation("bad_commit", f"{node.name} height {eff.height}: {exc}")
            )
        try:
            node.app.apply(eff.height, eff.block)
        except InvalidInput as exc:
            self.result.violations.append(
                Violation("invalid_block", f"{node.name} height {eff.height}: {exc}")
            )
            _skip_block(node.app, eff.height)
        node.store.put_block(
            eff.height, eff.commit.block_hash, eff.block, encode_commit(eff.commit)
        )
        node.store.truncate_wal(eff.height + 1)
        node.decided[eff.height] = eff.commit.block_hash
        if node.name == self.honest_validators[0]:
            tx_ids = getattr(node.app, "block_tx_ids", None)
            for tx in tx_ids(eff.block) if tx_ids is not None else ():
                at = self._tx_submitted_at.pop(tx, None)
                if at is not None:
                    self.result.commit_latency_ms.append(self.now - at)

    def _crash(self, node: _HonestNode) -> None:
        node.alive = False
        node.incarnation += 1
        self.result.crashes += 1
        self._down.append(node.name)

    # -- fault schedule ---------------------------------------------------------------------------

    def _schedule_faults(self, until: int) -> None:
        f = self.faults
        honest = list(self.nodes)
        if f.on("partition") or f.on("asymmetric"):
            t = self.rng.randint(*f.partition_every_ms)
            while t < until:
                self._push(t, ("partition",))
                t += self.rng.randint(*f.partition_every_ms)
        if f.on("crash"):
            t = self.rng.randint(*f.crash_every_ms)
            while t < until:
                self._push(t, ("crash", self.rng.choice(honest)))
                t += self.rng.randint(*f.crash_every_ms)

    def _partition(self) -> None:
        names = list(self.validator_names) + [n for n in self.nodes if n.startswith("f")]
        self.rng.shuffle(names)
        cut = self.rng.randint(1, len(names) - 1)
        a, b = names[:cut], names[cut:]
        asym = self.faults.on("asymmetric") and (
            not self.faults.on("partition") or self.rng.random() < 0.5
        )
        for x in a:
            for y in b:
                self.blocked.add((x, y))
                if not asym:
                    self.blocked.add((y, x))
        self.result.partitions += 1
        length = self.rng.randint(*self.faults.partition_length_ms)
        self._push(min(self.now + length, self._fault_until), ("heal",))

    # -- running ----------------------------------------------------------------------------------

    def run(
        self,
        *,
        fault_ms: int,
        calm_ms: int,
        progress_heights: int = 2,
        checks: Sequence[RunCheck] = (),
    ) -> RunResult:
        """Faults during ``[0, fault_ms)``, then a reliable network for ``calm_ms``; check it all.

        ``checks`` are extra run-level checks (the ledger's: no energy sold twice, conservation).
        """
        self._fault_until = fault_ms
        self._schedule_faults(fault_ms)
        self._push(fault_ms, ("calm",))
        for name in sorted(self.nodes):
            node = self.nodes[name]
            self._run_effects(node, node.core.start(node.now()))
        t = self._tx_interval
        while t < fault_ms + calm_ms:
            self._push(t, ("tx",))
            t += self._tx_interval
        heights_at_calm: dict[str, int] = {}
        end = fault_ms + calm_ms
        while self._heap and self._heap[0][0] <= end:
            at, _seq, ev = heapq.heappop(self._heap)
            self.now = at
            kind = ev[0]
            if kind == "calm":
                self.blocked.clear()
                for node in self.nodes.values():
                    node.tear_at = None
                for name in list(self._down):
                    self._restart(name)
                heights_at_calm = {n: len(node.decided) for n, node in self.nodes.items()}
            else:
                self._step(ev)
        self._finish(heights_at_calm, progress_heights)
        for check in checks:
            self.result.violations.extend(check(self, self.result))
        return self.result

    def _restart(self, name: str) -> None:
        if name in self._down:
            self._down.remove(name)
            node = self.nodes[name]
            node.restart()
            self._transcript.update(pack(["restart", self.now, name]))
            self._run_effects(node, node.core.start(node.now()))

    def _step(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "deliver":
            _, dst, src, data = ev
            self._transcript.update(pack(["d", self.now, dst, src]) + data)
            msg = decode_message(data)
            if dst in self.byzantine:
                self.byzantine[dst].on_message(src, msg)
                return
            node = self.nodes.get(dst)
            if node is None or not node.alive:
                return
            self._run_effects(node, node.core.on_message(src, msg, node.now()))
        elif kind == "timer":
            _, name, incarnation, tkind, h, r = ev
            node = self.nodes[name]
            if node.alive and node.incarnation == incarnation:
                self._run_effects(node, node.core.on_timer(tkind, h, r, node.now()))
        elif kind == "tx":
            self._submit_tx()
        elif kind == "partition":
            self._partition()
        elif kind == "heal":
            self.blocked.clear()
        elif kind == "crash":
            node = self.nodes[ev[1]]
            if node.alive and node.tear_at is None:
                if self.rng.random() < 0.5:
                    node.tear_at = self.rng.randint(0, 3)  # dies inside its next step
                    self.result.torn_crashes += 1
                else:
                    self._crash(node)
                length = self.rng.randint(*self.faults.crash_length_ms)
                self._push(min(self.now + length, self._fault_until), ("restart", node.name))
        elif kind == "restart":
            if self.nodes[ev[1]].tear_at is not None:
                self._push(self.now + 50, ev)
            else:
                self._restart(ev[1])

    def _sim_tx(self, rng: random.Random, now: int) -> tuple[bytes, Any]:
        del now
        i = rng.randrange(len(self._client_keys))
        self._client_nonce[i] += 1
        tx = make_tx(
            self._client_keys[i], self._client_nonce[i], rng.randbytes(rng.randint(16, 96))
        )
        return tx.tx_id, tx

    def make_app(self, name: str) -> SimApplication:
        if self._app_factory is not None:
            return self._app_factory(name)
        return SimApp(sig_counter=self.sig_counter, max_block_txs=self.max_block_txs)

    def _submit_tx(self) -> None:
        made = self._tx_source(self.rng, self.epoch_ms + self.now)
        if made is None:
            return
        tid, tx = made
        self._tx_submitted_at[tid] = self.now
        alive = [n for n in self.honest_validators if self.nodes[n].alive]
        # a client submits to two validators, as a household re-sending on timeout would
        for name in self.rng.sample(alive, min(2, len(alive))):
            self.nodes[name].app.submit(tx)

    def _finish(self, heights_at_calm: dict[str, int], progress_heights: int) -> None:
        res = self.result
        by_height: dict[int, dict[bytes, list[str]]] = {}
        for name in sorted(self.nodes):
            node = self.nodes[name]
            res.decided[name] = dict(node.decided)
            if isinstance(node.core, Consensus):
                res.refused_signatures += node.core.refused_signatures
            for h, value in sorted(node.decided.items()):
                by_height.setdefault(h, {}).setdefault(value, []).append(name)
        for h, values in sorted(by_height.items()):
            if len(values) > 1:
                parts = "; ".join(f"{v.hex()[:12]} by {','.join(ns)}" for v, ns in values.items())
                res.violations.append(Violation("disagreement", f"height {h}: {parts}"))
        res.heights = max((len(n.decided) for n in self.nodes.values()), default=0)
        stuck = [
            f"{n}: {heights_at_calm.get(n, 0)}->{len(node.decided)}"
            for n, node in sorted(self.nodes.items())
            if len(node.decided) < max(heights_at_calm.values(), default=0) + progress_heights
        ]
        if stuck:
            res.violations.append(Violation("no_progress_after_faults", ", ".join(stuck)))
        first = self.nodes[self.honest_validators[0]] if self.honest_validators else None
        res.committed_txs = getattr(first.app, "tx_count", 0) if first else 0
        res.byzantine_events = self.byzantine_events
        res.signature_checks = self.sig_counter[0]
        res.transcript_sha256 = self._transcript.hexdigest()


def _skip_block(app: SimApplication, height: int) -> None:
    """After a committed block failed to apply (a violation already recorded), let the
    application move past it if it knows how (only :class:`SimApp` does)."""
    if isinstance(app, SimApp):
        app.height = height


#: A run-level check the ledger adds later (no energy sold twice, conservation, …).
RunCheck = Callable[[Simulation, RunResult], Sequence[Violation]]

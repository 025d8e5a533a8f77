"""In-process simulated network and virtual clock that drive many nodes through the one executor.

Rules of this module:

* Every honest node — validator or full node — is the one node executor
  (:class:`gridnode.node.Executor`, what the daemon and the in-process engine run) on a simulated
  outbox and clock; nothing here carries out a consensus effect itself. The fault campaign adds its
  faults through the executor's hooks: a *torn* crash is a plan hook that cuts a step's actions
  after ``k`` of them (a ``kill -9`` in the middle of a step), planted bugs are plan hooks too
  (``Simulation(plan_hooks=...)``), and the checks are observers of the actions carried out.
* One :class:`Simulation` owns a virtual clock (integer ms), an event heap ordered by
  ``(time, sequence)`` and one seeded ``random.Random``; every random choice (delays, drops, faults,
  Byzantine choices, transactions) is drawn from it in event order, so a seed gives a
  byte-identical transcript (:attr:`RunResult.transcript_sha256`) on every run and platform.
  Nothing here iterates over a ``set`` of bytes/str (hash order varies between processes).
* Messages travel as their canonical bytes and are decoded by the receiving executor.
* Faults (each switchable, see :class:`Faults`) are active during ``[0, fault_ms)``; a ``stall``
  (every link down for ``Faults.stall_ms``, longer than the applications' clock-drift bound,
  starting right after a validator locked a value; every honest validator restarts during it, so
  the locks outlive everything but the WAL) may extend that. A torn crash kills the node inside
  its next step that writes to its store (half of them: that stores a block), just before one of
  those writes (chosen at random). When the faults end (*heal*)
  the network is reliable and every crashed node restarts, and the run checks that every honest
  node decides again within ``liveness_ms`` (:attr:`RunResult.recovery_ms`). Byzantine validators
  stay Byzantine for the whole run.
* A restart rebuilds the node only from its store (a new executor: snapshot + blocks, WAL,
  last-signed record). :class:`~gridnode.store.MemoryStore` is the in-memory stand-in for the
  SQLite store (same interface); ``store_factory`` runs SQLite files instead.
* Clock skew: node ``i`` reads ``global_now + skew_i``; its timers are converted back.
* Checks on every run: ``disagreement`` (two honest nodes decided different blocks at a height),
  ``bad_commit`` (a decided block's commit is not > 2/3 valid precommits), ``invalid_block`` (a
  committed block breaks an application rule: the executor halts), ``double_sign`` (an honest
  validator signed two different values for one height, round and step), ``lost_commit`` (a block
  a node announced as committed is not in its store after a restart), ``no_decision_within_bound``
  and ``no_progress_after_faults`` (liveness after heal), plus the caller's ``checks``. Two more
  check the driver contract itself on every action: ``unpersisted_signature`` (a signature left
  before its record was persisted) and ``announced_unstored`` (a block was announced before it
  was stored).
* The default application is :class:`sims.simapp.SimApp` (signed opaque transactions), so
  consensus can be exercised without the ledger; the ledger plugs in through the same
  :class:`~gridnode.node.NodeApp` protocol.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Persist,
    SignedRecord,
    Step,
    TimerKind,
)
from gridnode.core.consensus_messages import (
    ConsensusMessage,
    Proposal,
    ValidatorSet,
    Vote,
    decode_message,
    verify_commit,
)
from gridnode.core.crypto import KeyPair
from gridnode.node import Action, Duty, Executor, LedgerHalted, NodeApp, PlanHook
from gridnode.store import MemoryStore, Store
from market.codec import pack
from market.errors import InvalidInput
from sims.byzantine import ByzantineValidator
from sims.simapp import SimApp, SimTx, make_tx

__all__ = [
    "FAULT_NAMES",
    "AppHook",
    "Faults",
    "RunResult",
    "SimApp",
    "SimTx",
    "Simulation",
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
    "stall",
)

#: ``(rng, now_ms) -> (tx_id, tx)`` or ``None``: the clients' next transaction.
TxSource = Callable[[random.Random, int], "tuple[bytes, Any] | None"]


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
    #: a ``stall`` cuts every link this long (longer than the apps' 10 s drift bound), starting
    #: right after the first lock a validator takes after a random moment of the fault window;
    #: every honest validator restarts during it
    stall_ms: int = 12_000

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
    stalls: int = 0
    byzantine_events: int = 0
    evidence: int = 0
    refused_signatures: int = 0
    refused_proposals: int = 0
    messages: int = 0
    dropped: int = 0
    committed_txs: int = 0
    signature_checks: int = 0
    violations: list[Violation] = field(default_factory=list)
    transcript_sha256: str = ""
    #: ``decided[node][height] = block hash`` for every honest node.
    decided: dict[str, dict[int, bytes]] = field(default_factory=dict)
    commit_latency_ms: list[int] = field(default_factory=list)
    #: virtual ms at which the faults ended (the network healed)
    heal_ms: int = 0
    #: the slowest honest node's first new decision after heal, in ms (-1: some node never did)
    recovery_ms: int = -1


#: The actions that write to the node's store (where a torn crash may strike just before).
_WRITES: Final = frozenset({Duty.PERSIST, Duty.STORE, Duty.TRUNCATE, Duty.SNAPSHOT})

#: Called on every application an honest node boots with (the campaign's planted app bugs).
AppHook = Callable[["Simulation", str, NodeApp], None]


# --- nodes ------------------------------------------------------------------------------------


class _SimOutbox:
    """The executor's outbox on the simulated network and clock."""

    def __init__(self, sim: Simulation, node: _SimNode) -> None:
        self.sim = sim
        self.node = node

    def broadcast(self, data: bytes) -> None:
        for dst in self.sim.validator_names:
            if dst != self.node.name:
                self.sim.transmit(self.node.name, dst, data)

    def send(self, to: str, data: bytes) -> None:
        self.sim.transmit(self.node.name, to, data)

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        sim, node = self.sim, self.node
        at = max(sim.now, at_ms - node.skew - sim.epoch_ms)
        sim.push(at, ("timer", node.name, node.incarnation, kind, height, round_))


class _SimNode:
    """One honest node: an executor, rebuilt from its store at every restart."""

    def __init__(self, sim: Simulation, name: str, key: KeyPair | None, skew_ms: int) -> None:
        self.sim = sim
        self.name = name
        self.key = key
        self.skew = skew_ms
        self.alive = True
        self.halted = False
        self.incarnation = 0
        self.tear: str | None = None  # a torn crash armed: "write" or "block" (see _tear)
        self.torn = False
        #: heights this node announced as committed (NOTIFY), and their block hashes
        self.decided: dict[int, bytes] = {}
        #: (height, round, step) -> value of every signature this validator sent
        self.signed: dict[tuple[int, int, int], bytes] = {}
        #: (height, round, step, value) of every signed record its executor persisted
        self.persisted: set[tuple[int, int, int, bytes]] = set()
        self.rt = self._boot()

    def _boot(self) -> Executor[Any]:
        sim = self.sim
        app = sim.make_app(self.name)
        for hook in sim.app_hooks:
            hook(sim, self.name, app)
        rt: Executor[Any] = Executor(
            app=app,
            validators=sim.validators,
            key=self.key,
            store=sim.open_store(self.name),
            outbox=_SimOutbox(sim, self),
            validator=self.key is not None,
            sync_peers=sim.validator_names,
            config=sim.config,
            snapshot_every=sim.snapshot_every,
        )
        rt.plan_hooks.extend(sim.plan_hooks)
        rt.plan_hooks.append(self._tear)
        rt.observers.append(self._observe)
        return rt

    @property
    def app(self) -> Any:
        return self.rt.app

    @property
    def store(self) -> Store:
        return self.rt.store

    @property
    def core(self) -> Any:
        return self.rt.core

    def now(self) -> int:
        return self.sim.epoch_ms + self.sim.now + self.skew

    def restart(self) -> None:
        self.rt.store.close()
        self.incarnation += 1
        self.tear, self.torn = None, False
        self.rt = self._boot()
        self.alive = True
        head = self.rt.store.head()
        top = head.height if head is not None else 0
        lost = sorted(h for h in self.decided if h > top)
        if lost:
            self.sim.violation("lost_commit", f"{self.name}: announced {lost} but stored {top}")
            for h in lost:
                del self.decided[h]

    # -- hooks on the executor --------------------------------------------------------------------

    def _tear(self, actions: list[Action]) -> list[Action]:
        """A ``kill -9`` inside the first step that writes to the store (``tear == "write"``) or
        stores a block (``"block"``) once a torn crash is armed: the node dies just before one of
        the step's writes (or after its last action), chosen at random, so every write is in turn
        the first one that did not happen."""
        if self.tear is None:
            return actions
        cuts = [i for i, a in enumerate(actions) if a.duty in _WRITES]
        if not cuts or (self.tear == "block" and all(a.duty is not Duty.STORE for a in actions)):
            return actions
        self.tear, self.torn = None, True
        return actions[: self.sim.rng.choice([*cuts, len(actions)])]

    def _observe(self, action: Action) -> None:
        self.sim.observe(self, action)


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
        app_factory: Callable[[str], NodeApp] | None = None,
        tx_source: TxSource | None = None,
        epoch_ms: int = 0,
        validator_keys: Sequence[KeyPair] | None = None,
        tx_interval_ms: int = 150,
        max_block_txs: int = 200,
        snapshot_every: int = 5,
        plan_hooks: Sequence[PlanHook] = (),
        app_hooks: Sequence[AppHook] = (),
    ) -> None:
        self.seed = seed
        self._store_factory = store_factory
        self._app_factory = app_factory
        self.epoch_ms = epoch_ms
        self.snapshot_every = snapshot_every
        self.plan_hooks = tuple(plan_hooks)
        self.app_hooks = tuple(app_hooks)
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
        self.nodes: dict[str, _SimNode] = {}
        self.byzantine: dict[str, ByzantineValidator] = {}
        for i, k in enumerate(keys):
            name = self.validator_names[i]
            if i in byz_idx:
                self.byzantine[name] = ByzantineValidator(self, name, i, k)
            else:
                self.nodes[name] = _SimNode(self, name, k, self.rng.randint(-skew, skew))
        for j in range(full_nodes):
            self.nodes[f"f{j}"] = _SimNode(self, f"f{j}", None, self.rng.randint(-skew, skew))
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
        self._calm_ms = 0
        self._end = 0
        self._blackout_until = 0
        self._stall_at: int | None = None  # the stall starts at the first lock after this
        self._heal_at: int | None = None
        self._heights_at_heal: dict[str, int] = {}
        self._recovered: dict[str, int] = {}
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

    def make_app(self, name: str) -> NodeApp:
        if self._app_factory is not None:
            return self._app_factory(name)
        return SimApp(sig_counter=self.sig_counter, max_block_txs=self.max_block_txs)

    def clock_ms(self, name: str) -> int:
        """Node ``name``'s clock now (unix ms, with its skew)."""
        return self.nodes[name].now()

    def violation(self, kind: str, detail: str) -> None:
        self.result.violations.append(Violation(kind, detail))

    # -- scheduling -------------------------------------------------------------------------------

    def push(self, at: int, event: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, event))

    def _faulty(self, name: str) -> bool:
        return self.now < self._fault_until and self.faults.on(name)

    def transmit(self, src: str, dst: str, data: bytes) -> None:
        """Put one message on the wire from ``src`` to ``dst`` (subject to the active faults)."""
        self.result.messages += 1
        if (
            self.now < self._blackout_until
            or (src, dst) in self.blocked
            or (self._faulty("drop") and self.rng.random() < self.faults.drop_probability)
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
            self.push(self.now + delay, ("deliver", dst, src, data))

    # -- the executors ----------------------------------------------------------------------------

    def _drive(self, node: _SimNode, call: Callable[[Executor[Any]], None]) -> None:
        """One input into ``node``'s executor; a torn step then kills the node."""
        try:
            call(node.rt)
        except LedgerHalted as exc:
            self.violation("invalid_block", f"{node.name}: {exc}")
            node.alive, node.halted = False, True
            return
        if node.torn:
            node.torn = False
            self._crash(node)

    def observe(self, node: _SimNode, action: Action) -> None:
        """Every action an honest executor carried out (the run's checks and the stall trigger)."""
        duty, eff = action.duty, action.effect
        if duty is Duty.SEND and isinstance(eff, Broadcast):
            self._check_signed(node, eff.message)
        elif duty is Duty.NOTIFY:
            assert isinstance(eff, Decided)
            self._decided(node, eff)
        elif duty is Duty.PERSIST:
            assert isinstance(eff, Persist)
            rec = eff.record
            if isinstance(rec, SignedRecord):
                node.persisted.add((rec.height, rec.round, int(rec.step), rec.value))
            elif rec.locked_round >= 0:
                self._locked()
        elif duty is Duty.EVIDENCE:
            self.result.evidence += 1
        elif duty is Duty.REFUSED:
            self.result.refused_proposals += 1

    def _check_signed(self, node: _SimNode, msg: ConsensusMessage) -> None:
        core = node.rt.core
        if not isinstance(core, Consensus):
            return
        if isinstance(msg, Vote) and msg.validator == core.index:
            key, value = (msg.height, msg.round, int(msg.vote_type)), msg.block_hash
            signed = value
        elif isinstance(msg, Proposal) and msg.proposer == core.index:
            key = (msg.height, msg.round, int(Step.PROPOSE))
            value = msg.block_hash + msg.valid_round.to_bytes(8, "big", signed=True)
            signed = msg.block_hash
        else:
            return
        if (*key, signed) not in node.persisted:
            h, r, step = key
            self.violation("unpersisted_signature", f"{node.name} sent h{h} r{r} step {step}")
        old = node.signed.setdefault(key, value)
        if old != value:
            h, r, step = key
            self.violation("double_sign", f"{node.name} signed two values at h{h} r{r} step {step}")

    def _decided(self, node: _SimNode, eff: Decided) -> None:
        self._transcript.update(
            pack(["decided", self.now, node.name, eff.height, eff.commit.block_hash])
        )
        stored = node.store.block(eff.height)
        if stored is None or stored.block_hash != eff.commit.block_hash:
            self.violation("announced_unstored", f"{node.name} height {eff.height}")
        try:
            verify_commit(self.validators, eff.commit, eff.block, height=eff.height)
        except InvalidInput as exc:
            self.violation("bad_commit", f"{node.name} height {eff.height}: {exc}")
        node.decided[eff.height] = eff.commit.block_hash
        if (
            self._heal_at is not None
            and node.name not in self._recovered
            and eff.height > self._heights_at_heal.get(node.name, 0)
        ):
            self._recovered[node.name] = self.now - self._heal_at
        if node.name == self.honest_validators[0]:
            tx_ids = getattr(node.app, "block_tx_ids", None)
            for tx in tx_ids(eff.block) if tx_ids is not None else ():
                at = self._tx_submitted_at.pop(tx, None)
                if at is not None:
                    self.result.commit_latency_ms.append(self.now - at)

    def _locked(self) -> None:
        """A validator took a lock: an armed stall starts at the first lock after its time."""
        if self._stall_at is not None and self._stall_at <= self.now < self._fault_until:
            self._stall_at = None
            length = self.faults.stall_ms
            self._blackout_until = self.now + length
            self._end = max(self._end, self._blackout_until + self._calm_ms)
            self.result.stalls += 1
            self._transcript.update(pack(["stall", self.now, self._blackout_until]))
            # every honest validator restarts during the outage, as operators do with a stuck
            # node: what it had judged is gone, its lock is in its WAL
            for name in self.honest_validators:
                down = self.now + self.rng.randint(length // 4, length // 2)
                self.push(down, ("stall_crash", name))
                self.push(down + self.rng.randint(1, length // 4), ("stall_restart", name))

    def _crash(self, node: _SimNode) -> None:
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
                self.push(t, ("partition",))
                t += self.rng.randint(*f.partition_every_ms)
        if f.on("crash"):
            t = self.rng.randint(*f.crash_every_ms)
            while t < until:
                self.push(t, ("crash", self.rng.choice(honest)))
                t += self.rng.randint(*f.crash_every_ms)
        if f.on("stall"):
            self._stall_at = self.rng.randrange(until)

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
        self.push(min(self.now + length, self._fault_until), ("heal",))

    # -- running ----------------------------------------------------------------------------------

    def run(
        self,
        *,
        fault_ms: int,
        calm_ms: int,
        progress_heights: int = 2,
        liveness_ms: int = 8_000,
        checks: Sequence[RunCheck] = (),
    ) -> RunResult:
        """Faults during ``[0, fault_ms)`` (longer if a stall is still on), then a reliable network
        for ``calm_ms``; check it all. Every honest node must decide a new height within
        ``liveness_ms`` of the heal. ``checks`` are extra run-level checks (the ledger's: no energy
        sold twice, conservation).
        """
        self._fault_until = fault_ms
        self._calm_ms = calm_ms
        self._end = fault_ms + calm_ms
        self._schedule_faults(fault_ms)
        self.push(fault_ms, ("calm",))
        for name in sorted(self.nodes):
            node = self.nodes[name]
            self._drive(node, lambda rt, node=node: rt.start(node.now()))  # type: ignore[misc]
        self.push(self._tx_interval, ("tx",))
        heights_at_calm: dict[str, int] = {}
        while self._heap and self._heap[0][0] <= self._end:
            at, _seq, ev = heapq.heappop(self._heap)
            self.now = at
            if ev[0] != "calm":
                self._step(ev)
            elif self.now < self._blackout_until:
                self.push(self._blackout_until, ev)  # the stall outlasts the fault window
            else:
                self._heal()
                heights_at_calm = {n: len(node.decided) for n, node in self.nodes.items()}
        self._finish(heights_at_calm, progress_heights, liveness_ms)
        for check in checks:
            self.result.violations.extend(check(self, self.result))
        return self.result

    def _heal(self) -> None:
        self.blocked.clear()
        for node in self.nodes.values():
            node.tear = None
        for name in list(self._down):
            self._restart(name)
        self._heal_at = self.now
        self._end = self.now + self._calm_ms
        self._heights_at_heal = {n: max(node.decided, default=0) for n, node in self.nodes.items()}

    def _restart(self, name: str) -> None:
        if name in self._down:
            self._down.remove(name)
            node = self.nodes[name]
            try:
                node.restart()
            except LedgerHalted as exc:
                self.violation("invalid_block", f"{name} at restart: {exc}")
                node.halted = True
                return
            self._transcript.update(pack(["restart", self.now, name]))
            self._drive(node, lambda rt: rt.start(node.now()))

    def _step(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "deliver":
            _, dst, src, data = ev
            self._transcript.update(pack(["d", self.now, dst, src]) + data)
            if dst in self.byzantine:
                self.byzantine[dst].on_message(src, decode_message(data))
                return
            target = self.nodes.get(dst)
            if target is None or not target.alive:
                return
            self._drive(target, lambda rt: rt.on_message(src, data, target.now()))
        elif kind == "timer":
            _, name, incarnation, tkind, h, r = ev
            timed = self.nodes[name]
            if timed.alive and timed.incarnation == incarnation:
                self._drive(timed, lambda rt: rt.on_timer(tkind, h, r, timed.now()))
        elif kind == "tx":
            self._submit_tx()
            self.push(self.now + self._tx_interval, ("tx",))
        elif kind == "partition":
            self._partition()
        elif kind == "heal":
            self.blocked.clear()
        elif kind == "crash":
            node = self.nodes[ev[1]]
            if node.alive and node.tear is None:
                if self.rng.random() < 0.5:
                    # dies inside its next step that writes, or (half of them) stores a block
                    node.tear = "block" if self.rng.random() < 0.5 else "write"
                    self.result.torn_crashes += 1
                else:
                    self._crash(node)
                length = self.rng.randint(*self.faults.crash_length_ms)
                self.push(min(self.now + length, self._fault_until), ("restart", node.name))
        elif kind == "stall_crash":
            if self.nodes[ev[1]].alive:
                self._crash(self.nodes[ev[1]])
        elif kind == "stall_restart":
            self._restart(ev[1])
        elif kind == "restart":
            if self.nodes[ev[1]].tear is not None:
                self.push(self.now + 50, ev)
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

    def _submit_tx(self) -> None:
        made = self._tx_source(self.rng, self.epoch_ms + self.now)
        if made is None:
            return
        tid, tx = made
        self._tx_submitted_at[tid] = self.now
        alive = [n for n in self.honest_validators if self.nodes[n].alive]
        # a client submits to two validators, as a household re-sending on timeout would
        for name in self.rng.sample(alive, min(2, len(alive))):
            node = self.nodes[name]
            node.rt.offer(tx, node.now())

    def _finish(
        self, heights_at_calm: dict[str, int], progress_heights: int, liveness_ms: int
    ) -> None:
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
        res.heal_ms = self._heal_at if self._heal_at is not None else -1
        never = [n for n in sorted(self.nodes) if n not in self._recovered]
        res.recovery_ms = -1 if never else max(self._recovered.values(), default=0)
        slow = [f"{n}: {w} ms" for n, w in sorted(self._recovered.items()) if w > liveness_ms]
        if never or slow:
            what = [f"{n}: none" for n in never] + slow
            res.violations.append(
                Violation(
                    "no_decision_within_bound",
                    f"healed at {res.heal_ms} ms, bound {liveness_ms} ms: " + ", ".join(what),
                )
            )
        first = self.nodes[self.honest_validators[0]] if self.honest_validators else None
        res.committed_txs = getattr(first.app, "tx_count", 0) if first else 0
        res.byzantine_events = self.byzantine_events
        res.signature_checks = self.sig_counter[0]
        res.transcript_sha256 = self._transcript.hexdigest()


#: A run-level check the ledger adds (no energy sold twice, conservation, …).
RunCheck = Callable[[Simulation, RunResult], Sequence[Violation]]

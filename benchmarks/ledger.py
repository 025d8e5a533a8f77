"""Consensus + ledger capacity in one process, counting every Ed25519 verification.

Runs 4 and 7 validators and one full node on the simulated network (no faults) with the real ledger
(:class:`gridnode.core.app.LedgerApp`): ``--members`` households (2,000) submit signed orders and
meter readings on a fast clock (2-second slots); slots are cleared and settled inside ``apply``. Each transaction
is submitted to two validators (as a household re-sending on timeout would). ``--txs`` says what
the households submit (:data:`sims.ledger_campaign.TX_KINDS`): ``bundle`` (the default, what a
daemon sends since stop 26: one ``gn.tx.bundle`` per submission, the household's reading of the
last delivered slot the first time it sends in that slot's window, and one order; one signature)
or ``separate`` (≈ 30 % ``gn.tx.reading``, the rest ``gn.tx.order``: the benchmark before stop 27).
The first line of each run names the kind; ``committed`` counts transactions and ``parts`` the
orders and readings in them (a bundle counts both of its parts), so the two kinds compare on
``parts_per_cpu_s``.

**All nodes share this one process and its one core**, each with its own caches (nothing is
verified once for all, unlike ``sims/inproc.py``): the figure is what one core does for the whole
committee, not what one node does. What it counts and what it leaves out:

* ``cpu_s`` — CPU seconds of this process for the run (``time.process_time``), *minus* the load
  generator's own signing (``client_cpu_s``, timed separately): the system's work only.
* ``committed`` — signed ledger transactions in applied blocks; ``offered`` — transactions the
  clients created (``--offer`` per simulated second); ``uncommitted`` — offered but not committed:
  still pending in a mempool at the end, or refused/expired (an order whose slot closed while it
  waited, a reading already sent) after validators verified it. Blocks carry at most
  ``--block-txs`` and a height lasts ≈ ``--commit-ms`` of simulated time, so ≈ 2,400 tx per
  simulated second fill them (``fill`` = mean txs per block ÷ ``--block-txs``). Capacity is
  measured in CPU time, so it does not depend on the offered rate beyond amortising the per-height
  work (votes) over fuller blocks.
* ``tx_per_cpu_s`` — committed ÷ cpu_s. ``verify_bound`` — that ÷ Ed25519 verifications per CPU
  second on one core, measured in this process (:func:`gridnode.core.crypto.verify`: libsodium's
  ``crypto_sign_verify_detached``); ``1/verifies_per_tx`` is its ceiling.
* ``verifies`` — every Ed25519 verification (counted in :mod:`gridnode.core.crypto`), by domain
  (``tx`` = order/cancel/reading/bundle signatures: one per bundle, ``vote``, ``proposal``) and by who did it: each
  validator's mempool admission (``submit``), block check (``check``: proposing and validating),
  ``apply``; consensus messages; the full node; and the *harness* (the simulation's own check of
  every decided commit, not node work but CPU in this process).
* latency — **simulated** milliseconds from submission to the block applied at validator 0; it is
  set by the consensus timeouts (``--commit-ms`` between heights) and simulated links of 2–5 ms,
  and says nothing about CPU. ``cpu_ms_per_height`` is the CPU all nodes spent per height; divided
  by the node count it is one node's share (what a node on its own core would spend).

* the nodes run as daemons do: a state snapshot every ``--snapshot-every`` heights (100, the
  daemon's cadence; the fault campaigns snapshot every 5), and once the nodes are up the start-up
  objects are frozen out of the garbage collector's walks (:func:`gridnode.startup.settle_after_start`,
  what ``gridnode run`` does once it serves; ``--no-startup-freeze`` leaves them in).

``--app sim`` replaces the ledger by consensus' minimal signed log (the consensus core's ceiling).

``--prices N`` instead times the ledger's per-block work late in a long chain: ``build_block`` for
100 members on a state that already holds ``N`` earlier slots' clearing prices (a year of
15-minute slots: 35,040) — 40 rounds of a block of 100 orders, eight empty blocks and the block
that clears the slot — and a snapshot (``state.encode()``) after each clearing block; it prints
the mean CPU ms of each kind of block and of a snapshot, and the final state root (the same
from any tree: compare a tree's figures with ``--prices 300``, where a chain starts).

    python benchmarks/ledger.py [--validators 4,7] [--seconds 10] [--offer 2200] [--members 2000] [--block-txs 500]
                                [--commit-ms 200] [--app ledger|sim] [--txs bundle|separate]
                                [--snapshot-every 100] [--no-startup-freeze]
    python benchmarks/ledger.py --prices 35040
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import inspect
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

# this folder holds a ``sims.py``: when run as a script, the folder must not shadow the sims package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from gridnode.core.app import LedgerApp  # noqa: E402 - after the path fix above
from gridnode.core.consensus import ConsensusConfig  # noqa: E402
from gridnode.core.crypto import VERIFY_COUNTS, KeyPair, verify, verify_counts  # noqa: E402
from gridnode.core.ledger import (  # noqa: E402
    Genesis,
    build_block,
    genesis_state,
    sign_order,
    tx_id,
)
from gridnode.node import NodeRuntime  # noqa: E402
from gridnode.startup import settle_after_start  # noqa: E402
from market.orders import Order, Side, Step  # noqa: E402

try:  # the simulation harness is moving from gridnode/ to sims/
    import sims.simnet as simnet_mod  # type: ignore[import-not-found, unused-ignore]
    from sims.ledger_campaign import (  # type: ignore[import-not-found, unused-ignore]
        EPOCH_MS,
        LedgerWorld,
    )
except ImportError:
    import gridnode.simnet as simnet_mod  # type: ignore[no-redef, unused-ignore]
    from gridnode.ledger_campaign import EPOCH_MS, LedgerWorld  # type: ignore[no-redef, unused-ignore]
try:  # a tree from before stop 27 offers separate orders and readings only
    from sims.ledger_campaign import TX_KINDS  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    TX_KINDS = ("separate",)  # type: ignore[assignment, misc, unused-ignore]

Simulation = simnet_mod.Simulation
#: how often a daemon stores a state snapshot (``NodeRuntime``'s default, which ``gridnode run`` keeps)
DAEMON_SNAPSHOT_EVERY: int = inspect.signature(NodeRuntime).parameters["snapshot_every"].default


def verify_rate(n: int = 2000) -> float:
    """Ed25519 verifications per CPU second on one core (median of three runs of ``n``)."""
    key = KeyPair.from_rng(random.Random(1))
    msg = b"x" * 120
    sig = key.sign("bench", msg)
    rates = []
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            verify(key.public_key, "bench", msg, sig)
        rates.append(n / (time.process_time() - t0))
    return statistics.median(rates)


#: the node whose work runs now (a delivered message, a timer, a submit), for attributing the
#: garbage collector's full collections (diagnostic only)
_RUNNING = [""]


class FullCollections:
    """CPU seconds of the garbage collector's full (generation 2) collections, by the node that
    was running when one started: all nodes share one heap here, so a collection walks every
    node's objects and lands, whole, on whichever node allocated last (a diagnostic of the
    per-node figures' spread, not a correction: the figures count it where it lands)."""

    def __init__(self) -> None:
        self.by: Counter[str] = Counter()
        self.count = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.by[_RUNNING[0] or "clients"] += time.process_time() - self._t0
            self.count += 1


def _kind(domain: str) -> str:
    return domain if domain in ("vote", "proposal") else "tx"


def _delta(before: dict[str, int]) -> Counter[str]:
    out: Counter[str] = Counter()
    for domain, n in verify_counts().items():
        if domain == "bench":
            continue
        d = n - before.get(domain, 0)
        if d:
            out[_kind(domain)] += d
    return out


class Ledger:
    """Counting every verification by node and phase, the clients' CPU, and commit latencies."""

    def __init__(self, validators: int, offer_per_s: int, members: int, txs: str) -> None:
        kind: dict[str, Any] = {"txs": txs} if "bundle" in TX_KINDS else {}
        self.world = LedgerWorld(
            seed=1, validators=validators, members=members, double_sign_share=0.0, **kind
        )
        self.offer_per_s = offer_per_s
        self._owed = 0.0
        self.by: Counter[tuple[str, str]] = Counter()  # (who, phase) -> verifies
        self.client_cpu = 0.0
        self.offered = 0
        self.submitted_at: dict[bytes, int] = {}
        self.latencies: list[int] = []
        self.block_sizes: list[int] = []
        self.sim: Any = None
        self._rng = random.Random(2)
        self.submit_cpu: defaultdict[str, float] = defaultdict(float)

    def _count(self, who: str, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        by = self.by
        keys: dict[str, tuple[str, str]] = {}  # domain -> (who, phase:kind), made once

        def counted(*args: Any, **kwargs: Any) -> Any:
            # the same count as _delta, made cheaply: this wraps every submit, and its own cost
            # lands in the node's CPU time
            before = dict(VERIFY_COUNTS)
            try:
                return fn(*args, **kwargs)
            finally:
                if before != VERIFY_COUNTS:
                    for domain, n in VERIFY_COUNTS.items():
                        d = n - before.get(domain, 0)
                        if d and domain != "bench":
                            key = keys.get(domain)
                            if key is None:
                                key = keys[domain] = (who, f"{phase}:{_kind(domain)}")
                            by[key] += d

        return counted

    def app_factory(self, name: str) -> LedgerApp:
        app: LedgerApp = self.world.app_factory(name)
        submit = self._count(name, "submit", app.submit)

        def timed_submit(tx: Any, **kwargs: Any) -> Any:
            t0, outer = time.process_time(), _RUNNING[0]
            _RUNNING[0] = name
            try:
                return submit(tx, **kwargs)
            finally:
                _RUNNING[0] = outer
                self.submit_cpu[name] += time.process_time() - t0

        app.submit = timed_submit  # type: ignore[method-assign, unused-ignore]
        app.make_block = self._count(name, "check", app.make_block)  # type: ignore[method-assign, unused-ignore]
        app.block_error = self._count(name, "check", app.block_error)  # type: ignore[method-assign, unused-ignore]
        apply = self._count(name, "apply", app.apply)

        def timed_apply(height: int, block: bytes) -> Any:
            state = apply(height, block)
            if name == "v0":  # the block apply() just decoded (not decoded again on v0's time)
                txs = app.last_applied.txs if app.last_applied is not None else ()
                self.block_sizes.append(len(txs))
                for tx in txs:
                    at = self.submitted_at.pop(tx_id(tx), None)
                    if at is not None:
                        self.latencies.append(self.sim.now - at)
            return state

        app.apply = timed_apply  # type: ignore[method-assign, unused-ignore]
        return app

    def tx_source(self, rng: random.Random, now_ms: int) -> tuple[bytes, Any] | None:
        t0 = time.process_time()
        made: tuple[bytes, Any] | None = self.world.tx_source(rng, now_ms)
        self._owed += self.offer_per_s * self.sim._tx_interval / 1000 - 1
        extra = [self.world.tx_source(self._rng, now_ms) for _ in range(int(self._owed))]
        self._owed -= len(extra)
        self.client_cpu += time.process_time() - t0
        for tx in (made, *extra):
            if tx is not None:
                self.offered += 1
                self.submitted_at[tx[0]] = self.sim.now
        # the extra transactions go where the simulation sends the first: two live validators
        alive = [n for n in self.sim.honest_validators if self.sim.nodes[n].alive]
        for tx in extra:
            if tx is not None:
                for name in self._rng.sample(alive, min(2, len(alive))):
                    self.sim.nodes[name].app.submit(tx[1])
        return made


def bench(args: argparse.Namespace, validators: int, rate: float) -> None:
    ledger = (
        Ledger(validators, args.offer, args.members, args.txs) if args.app == "ledger" else None
    )
    hooks: dict[str, Any] = {}
    if ledger is not None:
        hooks = {
            "app_factory": ledger.app_factory,
            "tx_source": ledger.tx_source,
            "epoch_ms": EPOCH_MS,
            "validator_keys": ledger.world.validator_keys,
        }
    sim = Simulation(
        seed=1,
        validators=validators,
        full_nodes=1,
        config=ConsensusConfig(commit_ms=args.commit_ms),
        tx_interval_ms=args.interval_ms,
        max_block_txs=args.block_txs,
        snapshot_every=args.snapshot_every,
        **hooks,
    )
    harness: Counter[str] = Counter()
    harness_cpu: defaultdict[str, float] = defaultdict(float)
    node_cpu: defaultdict[str, float] = defaultdict(float)
    current = [""]
    check_commit = simnet_mod.verify_commit

    def harness_check(*a: Any, **k: Any) -> Any:
        before, t0 = verify_counts(), time.process_time()
        try:
            return check_commit(*a, **k)
        finally:
            harness.update(_delta(before))
            harness_cpu[current[0]] += time.process_time() - t0

    step = sim._step

    def timed_step(ev: tuple[Any, ...]) -> None:
        # CPU of delivering a message or firing a timer belongs to the node it is for
        current[0] = ev[1] if ev[0] in ("deliver", "timer") else "clients"
        _RUNNING[0] = current[0]
        t0 = time.process_time()
        try:
            step(ev)
        finally:
            node_cpu[current[0]] += time.process_time() - t0

    sim._step = timed_step  # type: ignore[method-assign, unused-ignore]
    simnet_mod.verify_commit = harness_check
    if ledger is not None:
        ledger.sim = sim
    before = verify_counts()
    full_gc = FullCollections()
    if args.startup_freeze:  # the nodes are up: what `gridnode run` does once it serves
        settle_after_start()
    gc.callbacks.append(full_gc)
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        res = sim.run(fault_ms=1, calm_ms=args.seconds * 1000, progress_heights=1)
    finally:
        simnet_mod.verify_commit = check_commit
        gc.callbacks.remove(full_gc)
        gc.unfreeze()  # the next run's start-up is its own
    cpu_all = time.process_time() - c0
    wall = time.perf_counter() - w0
    total = _delta(before)
    if ledger is not None:  # the ledger's run checks (conservation, agreement), not timed
        res.violations.extend(ledger.world.check(sim, res))
    parts_note, parts = "", 0
    if ledger is not None:
        committed = ledger.world.committed_txs
        orders = getattr(ledger.world, "committed_orders", None)
        if orders is not None:
            parts = orders + ledger.world.committed_readings
            parts_note = (
                f" parts={parts} ({orders} orders, {ledger.world.committed_readings} readings)"
            )
        client = ledger.client_cpu
        lat = sorted(ledger.latencies)
        offered = ledger.offered
        fill = statistics.mean(ledger.block_sizes) / args.block_txs if ledger.block_sizes else 0.0
    else:
        committed, client, lat = res.committed_txs, 0.0, sorted(res.commit_latency_ms)
        offered = args.seconds * 1000 // args.interval_ms
        fill = committed / max(1, res.heights) / args.block_txs
    cpu = cpu_all - client
    pending = 0
    if ledger is not None:
        pools = [sim.nodes[n].app.mempool for n in sim.honest_validators]
        pending = sum(1 for tid in ledger.submitted_at if any(tid in pool for pool in pools))
    n_verify = sum(total.values())
    per_tx = n_verify / max(1, committed)
    tps = committed / cpu
    nodes = validators + 1
    kind = f" txs={args.txs}" if ledger is not None else ""
    print(
        f"app={args.app}{kind} validators={validators} full_nodes=1 virtual_s={args.seconds} "
        f"heights={res.heights} offered={offered} committed={committed}{parts_note} "
        f"uncommitted={offered - committed} (pending at the end {pending}, the rest refused or expired) "
        f"fill={fill:.2f} violations={len(res.violations)}"
    )
    print(
        f"  cpu_s={cpu:.2f} (+ client signing {client:.2f}{'' if ledger else ': not separated'}; "
        f"wall {wall:.2f}) "
        f"tx_per_cpu_s={tps:.0f} verify_bound={tps / rate:.3f} (ceiling 1/verifies_per_tx = "
        f"{1 / per_tx if per_tx else 0:.3f}) verify_share_of_cpu={n_verify / rate / cpu:.0%}"
        + (f" parts_per_cpu_s={parts / cpu:.0f}" if parts else "")
    )
    print(
        f"  verifies={n_verify} per_committed_tx={per_tx:.2f} "
        f"(tx {total['tx'] / max(1, committed):.2f}, vote {total['vote'] / max(1, committed):.2f}, "
        f"proposal {total['proposal'] / max(1, committed):.2f}); per height: "
        f"vote {total['vote'] / max(1, res.heights):.1f}, "
        f"proposal {total['proposal'] / max(1, res.heights):.1f}"
    )
    names = [*(f"v{i}" for i in range(validators)), "f0"]
    own = {
        name: node_cpu[name]
        - harness_cpu[name]
        + (ledger.submit_cpu[name] if ledger is not None else 0.0)
        for name in names
    }
    busiest = max(own, key=lambda name: own[name])
    sim_cpu = cpu - sum(own.values()) - sum(harness_cpu.values())
    print(
        "  cpu per committed tx, by node (µs): "
        + " ".join(f"{name} {1e6 * own[name] / max(1, committed):.0f}" for name in names)
        + f"; harness {1e6 * sum(harness_cpu.values()) / max(1, committed):.0f}, simulator "
        f"{1e6 * sim_cpu / max(1, committed):.0f}"
    )
    per_node_tps = committed / own[busiest] if own[busiest] else 0.0
    per_node_parts = (
        f" ({parts / own[busiest]:.0f} orders and readings)" if parts and own[busiest] else ""
    )
    print(
        f"  one core per node: the busiest ({busiest}) commits {per_node_tps:.0f} tx per CPU s"
        f"{per_node_parts} -> verify_bound_per_node={per_node_tps / rate:.3f}"
    )
    print(
        f"  of which full garbage collections (one heap for all nodes; each lands whole on the "
        f"node running): {full_gc.count}, {1000 * sum(full_gc.by.values()):.0f} ms in all; "
        + " ".join(
            f"{name} {1e6 * t / max(1, committed):.0f}"
            for name, t in sorted(full_gc.by.items())
            if t
        )
        + " µs per committed tx"
    )
    # the same figure with each node's own share of the full collections instead of the whole
    # ones that landed on it (a diagnostic: which node a collection lands on is a lottery of the
    # allocation sequence, and in a daemon a collection walks that node's heap alone)
    spread = sum(t for name, t in full_gc.by.items() if name in own) / len(names)
    even = {name: own[name] - full_gc.by.get(name, 0.0) + spread for name in names}
    heaviest = max(even, key=lambda name: even[name])
    even_tps = committed / even[heaviest] if even[heaviest] else 0.0
    print(
        f"  with the full collections spread evenly over the nodes: the busiest ({heaviest}) "
        f"commits {even_tps:.0f} tx per CPU s -> {even_tps / rate:.3f} (diagnostic)"
    )
    if ledger is not None:
        val = [f"v{i}" for i in range(validators)]
        phases = sorted({p for _, p in ledger.by})
        parts = []
        for phase in phases:
            v = sum(ledger.by[(w, phase)] for w in val)
            f = ledger.by[("f0", phase)]
            parts.append(f"{phase} validators {v / committed:.2f} full {f / committed:.2f}")
        app_sum = sum(ledger.by.values())
        consensus = n_verify - app_sum - sum(harness.values())
        print("  by phase, per committed tx: " + "; ".join(parts))
        print(
            f"  consensus messages (votes, proposals, full node's commit checks): "
            f"{consensus / committed:.2f}/tx; harness (simulation's check of each decided "
            f"commit, not node work): {sum(harness.values()) / committed:.2f}/tx"
        )
    p50 = statistics.median(lat) if lat else 0
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else 0
    print(
        f"  latency_simulated_ms p50={p50:.0f} p95={p95} (commit_ms={args.commit_ms}; simulated "
        f"time, not CPU) cpu_ms_per_height={1000 * cpu / max(1, res.heights):.1f} "
        f"(one node's share {1000 * cpu / max(1, res.heights) / nodes:.1f})"
    )


def prices_bench(n_prices: int, rounds: int = 40) -> None:
    """``--prices``: block building and snapshots on a state holding ``n_prices`` prices."""
    rng = random.Random(7)
    members = [KeyPair.from_rng(rng) for _ in range(100)]
    genesis = Genesis(
        community_id="bench-prices",
        genesis_time_ms=1_800_000_000_000,
        members=tuple(k.public_hex for k in members),
        validators=tuple(KeyPair.from_rng(rng).public_hex for _ in range(4)),
    )
    start = genesis_state(genesis)
    first = start.last_cleared_slot + 1
    prices: Any = {s: 100_000 + s % 977 for s in range(first - n_prices, first)}
    with contextlib.suppress(ImportError):  # as the ledger holds them (a tree from before
        # the shared prices holds a dict)
        prices = importlib.import_module("gridnode.core.ledger.prices").ClearingPrices.of(prices)
    state = replace(start, clearing_prices=prices)
    state.digest()
    clock, proposer = genesis.clock, genesis.validators[0]
    spent: Counter[str] = Counter()

    def timed(kind: str, txs: list[Any], time_ms: int) -> None:
        nonlocal state
        t = time.process_time()
        _, state = build_block(state, time_ms=time_ms, proposer=proposer, txs=txs)
        spent[kind] += time.process_time() - t

    now = genesis.genesis_time_ms + 1000
    for k in range(rounds):
        slot = clock.first_open_slot(now // 1000) + 1
        orders = []
        for i, key in enumerate(members):
            steps = (Step(150_000 + 100 * (i % 7), 100 + i),)
            side = Side.SELL if i % 2 else Side.BUY
            order = Order(f"o{k}-{i}", key.public_hex, side, slot, steps, k + 1)
            orders.append(sign_order(key, genesis, order))
        timed("orders", orders, now)
        for _ in range(8):
            now += 10_000
            timed("empty", [], now)
        now = (clock.start(slot) - genesis.gate_lead_seconds) * 1000 + 1000  # past gate closure
        timed("clearing", [], now)
        t = time.process_time()
        state.encode()
        spent["snapshot"] += time.process_time() - t
        now = clock.start(slot + 1) * 1000 + 1000
    per = {"orders": rounds, "empty": 8 * rounds, "clearing": rounds, "snapshot": rounds}
    figures = " ".join(f"{k}_ms={1e3 * spent[k] / n:.3f}" for k, n in per.items())
    print(
        f"prices={len(state.clearing_prices)} members=100 {figures} "
        f"state_root={state.digest().hex()[:16]} load_average={os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--validators", default="4,7")
    p.add_argument("--seconds", type=int, default=10, help="simulated seconds per run")
    p.add_argument("--interval-ms", type=int, default=1, help="simulated ms between client ticks")
    p.add_argument(
        "--offer", type=int, default=2200, help="transactions offered per simulated second"
    )
    p.add_argument("--block-txs", type=int, default=500)
    p.add_argument(
        "--members", type=int, default=2000, help="households sending (≈ 1 tx/s each by default)"
    )
    p.add_argument("--commit-ms", type=int, default=200, help="consensus wait between heights")
    p.add_argument("--app", choices=("ledger", "sim"), default="ledger")
    p.add_argument(
        "--txs",
        choices=TX_KINDS,
        default=TX_KINDS[0],
        help="what the households submit: one bundle (reading + order, signed once) per "
        "submission as daemons do (default), or separate orders and readings",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=DAEMON_SNAPSHOT_EVERY,
        help="heights between state snapshots (default: the daemon's; the fault campaigns use 5)",
    )
    p.add_argument(
        "--startup-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="freeze the start-up objects once the nodes are up, as the daemon does",
    )
    p.add_argument(
        "--prices",
        type=int,
        default=None,
        help="instead: per-block ledger work on a state holding this many clearing prices",
    )
    args = p.parse_args()
    if args.prices is not None:
        prices_bench(args.prices)
        return
    rate = verify_rate()
    print(
        f"ed25519_verify_per_cpu_s={rate:.0f} (libsodium via gridnode.core.crypto.verify, one "
        f"core, this process); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for n in (int(v) for v in args.validators.split(",")):
        bench(args, n, rate)
    print(f"ed25519_verify_per_cpu_s after the runs={verify_rate():.0f}")


if __name__ == "__main__":
    main()

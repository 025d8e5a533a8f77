"""The in-process simulation engine: a whole community on a virtual clock, deterministic by seed.

Same node code as the daemon, different driver:

* **Validators** are :class:`gridnode.node.NodeRuntime` (ledger application + mempool + Tendermint
  core + a :class:`~sims.prunedstore.PrunedMemoryStore`: a memory store that keeps the blocks after
  its latest snapshot and the last ``KEEP_BLOCKS``), wired through an in-process outbox: every message
  travels as its canonical bytes with a seeded latency (``network.latency_ms``) and loss model
  (``network.drop_rate`` plus the fault plan). Timers run on the same virtual clock.
* **Households** are the daemon's household agents (:class:`gridnode.household.agent.HouseholdAgent`,
  one per household, the same object the daemon drives) living in the scenario's homes
  (:mod:`sims.homes`: the shipped household replayed per household as the daemon's
  :class:`gridnode.meter.ReplayMeter` does, the CityLearn homes, or a folder of meter files): at
  every slot boundary each agent reads the slot just delivered (after its battery if any) and
  quotes the next open slots from its row of **one batched forecast**
  (:class:`gridnode.household.forecast.SlotForecaster`: the scenario's model, profile-qr by
  default, fitted for the whole community's history matrix once per ``refit_days`` period on the
  year before it, predicting every slot — one forecaster per history group, and under
  ``[training] mode = "federated"`` the community model's rounds and the personal blend:
  :mod:`sims.training`; or perfect foresight; on big runs the fits run in worker processes,
  the next period's fitted ahead while this one is simulated: :mod:`sims.fitpool`, same
  results), with the scenario's policy and the
  clearing prices of the highest honest validator's ledger state (the expected price). The engine
  signs what each agent produces at a boundary as one transaction, as the daemon does
  (:func:`gridnode.core.ledger.sign_bundle`: its reading and its orders, signed once; a bundle
  refused for one of its orders is followed by its reading alone) and submits it to a validator
  (another one after a timeout if it does not answer); a validator that admits a transaction to
  its mempool forwards it to the other validators.
* **Households are full nodes logically**, but their consensus cores are not run (1,000 cores would
  only re-verify the same commits). The validators' committed chain *is* the ledger. A sample full
  node (:mod:`sims.fullnode`) gets every height's first decision as it happens, checks its ≥ 2/3
  commit signatures, re-verifies every transaction signature and re-applies the block from genesis
  with :func:`gridnode.core.ledger.apply` in a fresh state, sharing nothing with the validators; on
  big runs it is a second process (the second core). At the end the engine checks that every honest
  validator holds the same head hash and state digest as that full node; the per-slot records come
  from it too.
* **What is shared to go fast** (outcomes identical, CPU not modelled per validator): the simulated
  validators share one cache of verified signatures and checked order rules, households put their
  own freshly signed transactions into it (the engine injects no forged transaction; the full node
  verifies every signature on its own), one of verified votes and proposals, a cache of checked
  blocks keyed by (head, block hash), and one of mempool admission answers keyed by (committed
  state, transaction, clock second): admission is a function of those alone.
* **Determinism**: one ``random.Random(seed)`` draws every latency and loss in event order; keys come
  from a seeded generator; events are ordered by ``(time, sequence)``; nothing iterates a ``set``.
  The same scenario and seed give a byte-identical ``results.json`` apart from ``wall_seconds``.
* **Faults** (the scenario's plan): ``drop`` (loss rate in a window), ``partition`` (validator groups
  cut off from each other), ``crash`` (a validator loses its memory and restarts from its store),
  ``byzantine`` (``silent``: sends nothing; ``equivocate``: for every vote it signs, also signs the
  conflicting nil vote and sends each to half of the others), ``skew`` (a validator's clock offset).
  Households never crash and their links to validators only suffer ``drop`` faults.

* **Batteries** (households whose group has ``battery_kwh > 0``): a
  :class:`gridnode.household.battery.Battery` with the scenario's kWh and kW (rounded to Wh and W),
  950 ‰ each way (round trip ≈ 90 %), no reserve, starting **half full**, owned by the household's
  agent. At each slot boundary the agent dispatches it over the slot just delivered against its
  contract for that slot (Wh sold − bought in the trades that the highest honest validator's ledger
  state holds for the slot; 0 if the slot was not cleared there), and the reading it signs is the
  *metered* net after dispatch. Its quotes pass the current state of charge to the policy. The
  forecasts stay forecasts of the natural net (PV − load), which is what the battery-aware policy
  expects. The engine records what every battery did for the KPIs.

Known limits: per-validator CPU is not modelled (shared caches, above), so the engine's speed says nothing
about a real validator's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import heapq
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from forecasting.series import energy_wh
from gridnode.core.consensus import AdaptiveCommit, ConsensusConfig, TimerKind
from gridnode.core.consensus_messages import (
    NIL,
    ConsensusMessage,
    Vote,
    decode_message,
    encode_message,
    sign_vote,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    READING_REFUSALS,
    Block,
    BundleReading,
    Genesis,
    LedgerState,
    SignedBundle,
    Tx,
    sign_bundle,
    sign_reading,
    tx_id,
)
from gridnode.household.agent import (
    BOUNDARY_DELAY_MS,
    HISTORY_DAYS,
    AgentConfig,
    Bidding,
    HouseholdAgent,
    Needs,
    expected_clearing_price,
)
from gridnode.household.battery import Dispatch, battery_from_sizes, contracts_wh
from gridnode.household.forecast import SlotForecast, foresight
from gridnode.node import Committed, NodeRuntime
from gridnode.store import MemoryStore
from market.errors import UsageError
from market.orders import Order
from sims.fullnode import SampleFullNode, SampleFullNodeProcess
from sims.homes import community_history, data_utc_offset_s
from sims.inproc_kpis import LatencyCounts, TradeSink, collect, reference, results_digest
from sims.prunedstore import PrunedMemoryStore
from sims.results import FaultEvent, SimResult
from sims.scenario import FaultSpec, HouseholdSpec, Scenario
from sims.slotstats import SlotMembers, SlotValues
from sims.training import Training

__all__ = ["Progress", "results_digest", "run_inproc"]

RETRY_MS: Final = 2_000  # a household re-sends elsewhere when a validator does not answer
QUOTE_OFFSET_MS: Final = BOUNDARY_DELAY_MS  # households act just after the slot boundary
PARALLEL_FULL_NODE_FROM: Final = 20_000  # household-slots: below, a second process is not worth it
FIT_WORKERS: Final = 2  # forecaster fit workers on big runs (sims.fitpool): this machine's cores
CALM_LIMIT_MS: Final = 3_600_000  # after the last slot: at most this long for validators to agree
#: validators snapshot their state every this many heights, and keep this many blocks (and all
#: above their latest snapshot): a year's chain is not held in RAM four to seven times
SNAPSHOT_EVERY: Final = 200
KEEP_BLOCKS: Final = 2 * SNAPSHOT_EVERY
#: ``cadence = "adaptive"``: a height starts 2 s after a decision once transactions wait (the
#: households' burst after a slot boundary arrives within the links' latency), at once when they
#: fill half a block, and at a gate closure or reading deadline; block_interval_s when idle
ADAPTIVE: Final = AdaptiveCommit(busy_ms=2_000, full_ms=0)
#: the shared cache of checked blocks keeps those at most this many heights under the latest
#: decision (validators lagging further check blocks themselves; the outcome is the same)
SHARED_BLOCKS_BEHIND: Final = 16
#: the shared cache of verified votes and proposals is emptied beyond this many (≈ 9 a height: a
#: year's would hold ~600,000)
VERIFIED_VOTES_KEPT: Final = 50_000
#: likewise the shared verified-signature set (≈ 29,000 ids a simulated day at 100 households; the
#: ledger's own bound, 500,000, is ≈ 50 MB) and the shared admission answers (≈ 19,000 a day; the
#: app's bound, 200,000, ≈ 50 MB): a year's run is memory-bound (docs/sims.md, "A year")
VERIFIED_KEPT: Final = 100_000
ADMISSION_KEPT: Final = 50_000
#: the cyclic garbage collector's thresholds during a run (Python's default is (700, 10, 10)): the
#: engine allocates millions of small objects per simulated day (transactions, votes, effects,
#: events), and at the default a young collection ran every 700 of them and an old one scanned
#: the run's long-lived chain state every 100 young ones — ≈ 12 % of the engine's CPU (measured:
#: the town shape and the year's first days, results identical; they do not depend on when
#: garbage is collected). Garbage cycles live a little longer (≤ 50,000 young objects).
GC_THRESHOLDS: Final = (50_000, 20, 100)
NETS_KEPT: Final = 4  # slots whose natural nets the engine keeps (slot_net)


@dataclass(frozen=True, slots=True)
class Progress:
    """Handed to the progress callback after every slot boundary."""

    sim_s: int  # simulated unix seconds
    slots_done: int
    slots_total: int
    height: int


@dataclass(slots=True)
class _Validator:
    name: str  # public key hex
    index: int
    key: KeyPair
    store: MemoryStore
    runtime: NodeRuntime | None = None
    incarnation: int = 0
    skew_ms: int = 0
    byzantine: str = ""  # "", "silent", "equivocate"


class _Outbox:
    def __init__(self, engine: _Engine, v: _Validator) -> None:
        self.engine = engine
        self.v = v

    def broadcast(self, data: bytes) -> None:
        for other in self.engine.validators:
            if other is not self.v:
                self.send(other.name, data)

    def send(self, to: str, data: bytes) -> None:
        self.engine.send_consensus(self.v, to, data)

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        e = self.engine
        at = max(at_ms - self.v.skew_ms, e.now)
        e.push(at, ("timer", self.v.index, self.v.incarnation, kind, height, round_))


@dataclass(slots=True)
class _Stats:
    """What the run records besides the chain, sized for long runs: a machine word per
    household-slot (:mod:`sims.slotstats`), not a dict entry."""

    households: int
    submitted_at: dict[bytes, int] = field(default_factory=dict)
    latencies_ms: LatencyCounts = field(default_factory=LatencyCounts)
    decided_at: dict[int, int] = field(default_factory=dict)
    orders_submitted: SlotMembers = field(init=False)
    forecast_p50: SlotValues = field(init=False)  # (slot, hh) -> P50
    refused: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.orders_submitted = SlotMembers(self.households)
        self.forecast_p50 = SlotValues(self.households)


class _Engine:
    def __init__(
        self, sc: Scenario, *, first_slot: int | None = None, fit_workers: int = 0
    ) -> None:
        self.sc = sc
        self.rng = random.Random(f"net:{sc.seed}")
        # One signature-verification cache shared by every simulated validator in this process,
        # seeded by the households with what they sign (see the module rules). Outcomes are
        # identical (the cache is keyed by the hash of the signed bytes); what is not modelled is
        # each validator's own verification CPU (the real daemon verifies on its own).
        self.verified: set[bytes] = set()
        # Likewise one cache of checked blocks keyed by (head hash, block hash): a validator whose
        # head and proposal match another's reuses that check. The sample full node re-applies
        # every committed block from genesis on its own, without these caches.
        # (ordered: the oldest are dropped from its front, which a plain dict finds by scanning
        # past every entry deleted before)
        self.shared_blocks: dict[tuple[bytes, bytes], tuple[Block, LedgerState]] = OrderedDict()
        # and one cache of verified consensus votes and proposals (each verified once, not 7 times)
        self.verified_votes: set[tuple[int, str, bytes, bytes]] = set()
        # and one of decoded consensus messages: a broadcast's bytes are decoded once, not by each
        self.decoded: dict[bytes, ConsensusMessage] = {}
        # and one of mempool admission answers keyed by (committed state, tx, clock second): the
        # check is a function of those alone, so validators on the same state share the answer
        self.admission: dict[tuple[int, bytes, bytes, int], str | None] = {}
        self.specs: list[HouseholdSpec] = sc.household_specs()
        self.hh_keys, v_keys = sc.node_keys()
        # simulated time: the data's calendar, start_day at start_hour (data-local time)
        day = dt.date.fromisoformat(sc.start_day)
        midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
        start_s = midnight - data_utc_offset_s(sc) + int(sc.start_hour * 3600)
        # slots are numbered on the data's calendar, unless the caller numbers them from its own
        # first slot (run_inproc's first_slot: the slot numbers of a daemon run, a wall clock's)
        self.first_slot = -(-start_s // sc.slot_seconds) if first_slot is None else first_slot
        self.last_slot = self.first_slot + sc.slots - 1
        begin_s = (self.first_slot - 1) * sc.slot_seconds
        self.genesis = Genesis(
            community_id=f"sim-{_safe(sc.name)}-{sc.seed}"[:64],
            genesis_time_ms=begin_s * 1000,
            members=tuple(k.public_hex for k in self.hh_keys),
            validators=tuple(k.public_hex for k in v_keys),
            slot_seconds=sc.slot_seconds,
            gate_lead_seconds=sc.gate_lead_seconds,
            retail_micro_per_kwh=sc.retail_micro_per_kwh,
            feed_in_micro_per_kwh=sc.feed_in_micro_per_kwh,
            grid_fee_micro_per_kwh=sc.grid_fee_micro_per_kwh,
            rule=sc.rule,
            netting=sc.netting,
            reading_deadline_seconds=sc.reading_deadline_seconds,
        )
        self.clock = self.genesis.clock
        self.config = ConsensusConfig(
            commit_ms=sc.block_interval_s * 1000,
            rebroadcast_ms=max(2_000, min(30_000, sc.block_interval_s * 500)),
            sync_interval_ms=1_000,
            adaptive=ADAPTIVE if sc.cadence == "adaptive" else None,
        )
        self.now = begin_s * 1000
        # the event queue, ordered by (time, push order): a heap of the distinct times that have
        # events and, per time, its events in push order (cheaper than one heap entry per event:
        # a slot's burst of transactions lands on a few hundred distinct milliseconds)
        self.times: list[int] = []
        self.at: dict[int, list[tuple[Any, ...]]] = {}
        self.validators = [
            _Validator(k.public_hex, i, k, PrunedMemoryStore(keep_blocks=KEEP_BLOCKS))
            for i, k in enumerate(v_keys)
        ]
        self.by_name = {v.name: v for v in self.validators}
        self.blocked: set[tuple[int, int]] = set()
        self.drop_rate = sc.drop_rate
        self.fault_drop: list[float] = []
        self.loss_rate = sc.drop_rate  # max(drop_rate, *fault_drop): set by set_loss()
        self.events: list[FaultEvent] = []
        self.stats = _Stats(len(self.specs))
        self.nonces = [0] * len(self.specs)
        self._nets: dict[int, list[int]] = {}  # slot -> natural net Wh per household
        self.home = [i % len(self.validators) for i in range(len(self.specs))]
        self.refit_s = sc.refit_days * 86_400
        # the history the forecaster is fitted on: HISTORY_DAYS before its first period's start
        first_fit_s = (begin_s // self.refit_s) * self.refit_s - HISTORY_DAYS * 86_400
        self.history = community_history(
            sc,
            self.specs,
            first_s=first_fit_s,
            end_s=(self.last_slot + 2) * sc.slot_seconds,
            node_anchor_s=begin_s + sc.slot_seconds,
            start_s=start_s,
        )
        # every household's forecaster; under federated training also the rounds (sims.training)
        self.training = Training(
            sc,
            self.specs,
            self.history,
            first_slot_s=self.clock.start(self.first_slot),
            refit_s=self.refit_s,
            fit_workers=fit_workers,
        )
        self.calm = False
        self.full_node: SampleFullNode | SampleFullNodeProcess = SampleFullNode(
            self.genesis, (self.first_slot, self.last_slot)
        )
        self.fed = 0  # the full node has every block up to this height
        self.to_feed: dict[int, tuple[int, bytes, bytes]] = {}
        self.agents = [
            HouseholdAgent(
                AgentConfig.of_member(
                    self.genesis,
                    key.public_hex,
                    bidding=Bidding(sc.policy),
                    battery=battery_from_sizes(spec.battery_kwh, spec.battery_kw),
                    first_slot=self.first_slot,
                    last_slot=self.last_slot,
                    quoted_slots=sc.horizon_slots,
                )
            )
            for key, spec in zip(self.hh_keys, self.specs, strict=True)
        ]
        self.batteries = _Batteries(
            [a.soc_wh for a in self.agents],
            present=any(a.config.battery is not None for a in self.agents),
        )

    # ------------------------------------------------------------------ meters
    def slot_energy(self, slot: int) -> tuple[np.ndarray[Any, Any], ...]:
        """(net, pv, load) Wh per household for ``slot`` (the meters' readings; PV and load are 0
        when the meters hold only the net)."""
        h = self.history.window(self.clock.start(slot), self.clock.end(slot))
        step = h.step_s
        net = energy_wh(h.net_w, step).sum(axis=1)
        if h.pv_w is None or h.load_w is None:
            return net, np.zeros_like(net), np.zeros_like(net)
        return net, energy_wh(h.pv_w, step).sum(axis=1), energy_wh(h.load_w, step).sum(axis=1)

    def slot_net(self, slot: int) -> list[int]:
        """Every household's natural net Wh in ``slot``: :meth:`slot_energy`'s first array as a
        list, without the PV and load sums, kept for the last few slots (perfect foresight quotes
        a slot one boundary before the meters read it). Read-only for callers."""
        net = self._nets.get(slot)
        if net is None:
            h = self.history.window(self.clock.start(slot), self.clock.end(slot))
            net = self._nets[slot] = energy_wh(h.net_w, h.step_s).sum(axis=1).tolist()
            if len(self._nets) > NETS_KEPT:
                del self._nets[min(self._nets)]
        return net

    # ------------------------------------------------------------------ scheduling
    def push(self, at: int, event: tuple[Any, ...]) -> None:
        events = self.at.get(at)
        if events is None:
            self.at[at] = [event]
            heapq.heappush(self.times, at)
        else:
            events.append(event)

    def latency(self) -> int:
        lo, hi = self.sc.latency_ms
        return lo + int(self.rng.random() * (hi - lo + 1))  # uniform on lo..hi; randint is slower

    def lost(self) -> bool:
        rate = self.loss_rate
        return rate > 0 and self.rng.random() < rate

    def set_loss(self) -> None:
        """Recompute :attr:`loss_rate` after ``drop_rate`` or ``fault_drop`` changed."""
        self.loss_rate = max([self.drop_rate, *self.fault_drop])

    def node_now(self, v: _Validator) -> int:
        return self.now + v.skew_ms

    def send_consensus(self, src: _Validator, to: str, data: bytes) -> None:
        dst = self.by_name.get(to)
        if dst is None:
            return
        if src.byzantine == "silent":
            return
        if src.byzantine == "equivocate":
            data = self._equivocate(src, dst, data)
        self.stats.messages += 1
        if (src.index, dst.index) in self.blocked or self.lost():
            self.stats.dropped += 1
            return
        self.push(self.now + self.latency(), ("msg", dst.index, src.name, data))

    def _equivocate(self, src: _Validator, dst: _Validator, data: bytes) -> bytes:
        msg = decode_message(data)
        if not isinstance(msg, Vote) or msg.block_hash == NIL or dst.index % 2 == 0:
            return data
        other = sign_vote(
            src.key,
            vote_type=msg.vote_type,
            height=msg.height,
            round_=msg.round,
            value=NIL,
            validator=msg.validator,
        )
        return encode_message(other)

    # ------------------------------------------------------------------ validators
    def boot(self, v: _Validator) -> None:
        rt = NodeRuntime(
            genesis=self.genesis,
            key=v.key,
            store=v.store,
            outbox=_Outbox(self, v),
            validator=True,
            config=self.config,
            snapshot_every=SNAPSHOT_EVERY,
            verified=self.verified,
            shared_blocks=self.shared_blocks,
            verified_votes=self.verified_votes,
            decoded=self.decoded,
            shared_admission=self.admission,
        )
        rt.listeners.append(functools.partial(self._committed, v))
        v.runtime = rt
        rt.start(self.node_now(v))

    def _committed(self, v: _Validator, c: Committed) -> None:
        st = self.stats
        if c.height in st.decided_at:
            return
        st.decided_at[c.height] = self.now
        self._forget_checked(c.height - SHARED_BLOCKS_BEHIND)
        if len(self.verified_votes) > VERIFIED_VOTES_KEPT:  # a cache: forgetting costs CPU only
            self.verified_votes.clear()
        if len(self.verified) > VERIFIED_KEPT:  # likewise
            self.verified.clear()
        if len(self.admission) > ADMISSION_KEPT:
            self.admission.clear()
        sb = v.store.block(c.height)
        assert sb is not None  # stored before it is applied
        # the sample full node gets each height's first decision, in height order
        self.to_feed[c.height] = (c.height, sb.block, sb.commit)
        while self.fed + 1 in self.to_feed:
            self.fed += 1
            self.full_node.feed(*self.to_feed.pop(self.fed))
        for tx in c.block.txs:
            at = st.submitted_at.pop(tx_id(tx), None)
            if at is not None:
                st.latencies_ms.append(self.now - at)

    def _forget_checked(self, below: int) -> None:
        """Drop the shared checked blocks under height ``below`` (a validator that needs one again,
        e.g. replaying its store after a crash, checks it itself: same state, more CPU). Each
        holds its block's transactions and the state after it: kept for a year's run, they
        would be the engine's largest use of memory."""
        shared = self.shared_blocks
        while shared:
            first = next(iter(shared))
            if shared[first][0].height >= below:
                return
            del shared[first]

    def crash(self, v: _Validator) -> None:
        v.runtime = None
        v.incarnation += 1
        v.store = v.store.reopen()

    # ------------------------------------------------------------------ households
    def households_act(self, boundary_slot: int) -> None:
        """At the start of ``boundary_slot``: every household's agent reads the slot just delivered
        and quotes the next open slots (one batched forecast for all); the engine signs what they
        produce and submits it, every household's readings first, then the orders."""
        del boundary_slot  # the agents know from the time which slots are due
        now_s = self.now // 1000
        needs = [a.needs(now_s) for a in self.agents]
        natural = self._natural(needs)
        contracts = self._contracts(needs)
        prices = self._clearing_prices()
        # the expected clearing price of each quoted slot is the same for every household
        quoted = sorted({s for n in needs for s in n.quote})
        expected = {s: expected_clearing_price(s, prices, self.clock) for s in quoted}
        forecasts = self._forecasts(now_s, needs)
        bundles: list[tuple[int, Tx]] = []
        for i, agent in enumerate(self.agents):
            key = self.hh_keys[i]
            actions = agent.on_slot_boundary(
                now_s,
                natural_wh={s: natural[s][i] for s in needs[i].read},
                contract_wh={s: contracts[s].get(key.public_hex, 0) for s in contracts},
                forecast=forecasts[i],
                clearing_prices=prices,
                expected_prices=expected,
            )
            reading = None
            for r in actions.readings:
                if r.dispatch is not None:
                    self.batteries.record(i, r.slot, r.dispatch)
                if reading is not None:  # a bundle carries one reading: any other goes alone
                    bundles.append(
                        (i, sign_reading(key, self.genesis, slot=r.slot, net_wh=r.net_wh))
                    )
                else:
                    reading = BundleReading(r.slot, r.net_wh)
            orders: list[Order] = []
            for q in actions.quotes:
                self.stats.forecast_p50[(q.slot, i)] = q.forecast.p50_wh
                self.nonces[i] += 1
                if q.order is None:
                    continue
                # as the daemon's: the order id is the policy's (nonce 0), the nonce the household's
                # next one; the clearing breaks ties between equal prices by order id
                o = q.order  # with the nonce (what dataclasses.replace does, without its lookups)
                order = Order(o.order_id, o.household, o.side, o.slot, o.steps, self.nonces[i])
                self.stats.orders_submitted.setdefault(q.slot, set()).add(i)
                orders.append(order)
            if reading is not None or orders:
                # what the daemon sends at a boundary: one bundle, signed once (docs/ledger.md)
                bundle = sign_bundle(key, self.genesis, reading=reading, orders=tuple(orders))
                bundles.append((i, bundle))
        for i, tx in bundles:
            # the simulated validators take the simulation's own signatures as verified (nothing
            # forged is injected); the full node re-verifies every one (see the module rules)
            self.verified.add(tx_id(tx))
            self.submit(i, tx, attempt=0)

    def _natural(self, needs: list[Needs]) -> dict[int, list[int]]:
        """Every household's meter (natural net, Wh) for each slot some agent needs read."""
        slots = sorted({s for n in needs for s in n.read})
        return {s: self.slot_net(s) for s in slots}

    def _contracts(self, needs: list[Needs]) -> dict[int, dict[str, int]]:
        """Wh sold − bought per household in the trades of each slot to read, as the highest honest
        validator's state holds them (only batteries need them)."""
        honest = [v.runtime for v in self.honest() if v.runtime is not None]
        if not self.batteries.present or not honest:
            return {}
        state = max(honest, key=lambda rt: rt.state.height).state  # ties: the first validator
        slots = sorted({s for n in needs for s in n.read})
        return {s: contracts_wh(state.trades.get(s, ())) for s in slots}

    def _clearing_prices(self) -> Mapping[int, int | None]:
        """The ledger's clearing prices by slot, as the highest honest validator's state holds them
        (the agents' expected clearing price; a daemon reads its own node's state)."""
        honest = [v.runtime for v in self.honest() if v.runtime is not None]
        if not honest or self.sc.policy != Bidding.FORECAST:
            return {}
        return max(honest, key=lambda rt: rt.state.height).state.clearing_prices

    def _forecasts(self, now_s: int, needs: list[Needs]) -> list[SlotForecast | None]:
        """Each household's forecast of the slots its agent quotes: one fit and one prediction
        for the whole community (or the actual net, for perfect foresight)."""
        slots = sorted({s for n in needs for s in n.quote})
        if not slots:
            return [None] * len(self.agents)
        if self.sc.policy == Bidding.PERFECT_FORESIGHT:
            self.training.catch_up(now_s)  # the rounds still run (their cost is a KPI)
            actual = {s: self.slot_net(s) for s in slots}
            return [foresight((s, actual[s][i]) for s in slots) for i in range(len(self.agents))]
        return self.training.forecast(now_s, slots, self.clock)

    def submit(self, household: int, tx: Tx, *, attempt: int) -> None:
        if attempt >= len(self.validators):
            self.stats.refused["unreachable"] = self.stats.refused.get("unreachable", 0) + 1
            return
        v = self.validators[(self.home[household] + attempt) % len(self.validators)]
        self.stats.submitted_at.setdefault(tx_id(tx), self.now)
        if self.lost():
            self.push(self.now + RETRY_MS, ("submit", household, tx, attempt + 1))
            return
        self.push(self.now + self.latency(), ("arrive", household, tx, attempt, v.index))

    def arrive(self, household: int, tx: Tx, attempt: int, v: _Validator) -> None:
        rt = v.runtime
        if rt is None:  # crashed: no answer, the household re-sends elsewhere after a timeout
            self.push(self.now + RETRY_MS, ("submit", household, tx, attempt + 1))
            return
        reason = rt.offer(tx, self.node_now(v))
        if reason is not None:
            if reason != "duplicate":
                self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
                self._reading_alone(household, tx, reason)
            return
        if v.byzantine == "silent":
            return
        st, blocked = self.stats, self.blocked
        for other in self.validators:
            if other is v:
                continue
            st.messages += 1
            if (blocked and (v.index, other.index) in blocked) or self.lost():
                st.dropped += 1
                continue
            self.push(self.now + self.latency(), ("tx", other.index, tx))

    def _reading_alone(self, household: int, tx: Tx, reason: str) -> None:
        """A bundle refused for one of its orders (e.g. its slot closed while it was re-sent)
        takes its reading down with it (all or nothing): the household then sends the reading
        alone, as the daemon does (:class:`gridnode.household_driver.HouseholdDriver`)."""
        if (
            isinstance(tx, SignedBundle)
            and tx.reading is not None
            and tx.orders
            and reason not in READING_REFUSALS
        ):
            r = tx.reading
            alone = sign_reading(
                self.hh_keys[household], self.genesis, slot=r.slot, net_wh=r.net_wh
            )
            self.verified.add(tx_id(alone))
            self.submit(household, alone, attempt=0)

    # ------------------------------------------------------------------ faults
    def schedule_faults(self, begin_ms: int) -> None:
        for n, f in enumerate(self.sc.faults):
            self.push(begin_ms + f.at_s * 1000, ("fault", n, "start"))
            if f.duration_s:
                self.push(begin_ms + (f.at_s + f.duration_s) * 1000, ("fault", n, "end"))

    def fault(self, f: FaultSpec, phase: str) -> None:
        """Start or end fault ``f``; the event's detail ends with the commit height at that moment."""
        n = len(self.events)
        self._fault(f, phase)
        for i in range(n, len(self.events)):
            ev = self.events[i]
            self.events[i] = FaultEvent(ev.at_s, ev.kind, f"{ev.detail} (height {self.height()})")

    def _fault(self, f: FaultSpec, phase: str) -> None:
        at_s = self.now // 1000
        v = self.validators[f.validator]
        if f.kind == "drop":
            if phase == "start":
                self.fault_drop.append(f.rate)
            else:
                self.fault_drop.remove(f.rate)
            self.set_loss()
            self.events.append(FaultEvent(at_s, "drop" if phase == "start" else "drop-end",
                                          f"rate={f.rate}"))  # fmt: skip
        elif f.kind == "partition":
            pairs = [
                (a, b)
                for gi, ga in enumerate(f.groups)
                for gj, gb in enumerate(f.groups)
                if gi != gj
                for a in ga
                for b in gb
            ]
            detail = " | ".join(",".join(f"v{x}" for x in g) for g in f.groups)
            if phase == "start":
                self.blocked.update(pairs)
                self.events.append(FaultEvent(at_s, "partition", detail))
            else:
                self.blocked.difference_update(pairs)
                self.events.append(FaultEvent(at_s, "heal", detail))
        elif f.kind == "crash":
            if phase == "start" and v.runtime is not None:
                self.crash(v)
                self.events.append(FaultEvent(at_s, "crash", f"v{v.index}"))
            elif phase == "end" and v.runtime is None:
                self.boot(v)
                self.events.append(FaultEvent(at_s, "restart", f"v{v.index}"))
        elif f.kind == "byzantine":
            v.byzantine = f.behaviour if phase == "start" else ""
            kind = "byzantine" if phase == "start" else "byzantine-end"
            self.events.append(FaultEvent(at_s, kind, f"v{v.index} {f.behaviour}"))
        elif f.kind == "skew":
            v.skew_ms = f.skew_ms if phase == "start" else 0
            kind = "skew" if phase == "start" else "skew-end"
            self.events.append(FaultEvent(at_s, kind, f"v{v.index} {f.skew_ms:+d} ms"))

    # ------------------------------------------------------------------ the loop
    def step(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "tx":  # the most frequent first
            v = self.validators[ev[1]]
            if v.runtime is not None:
                v.runtime.offer(ev[2], self.node_now(v))
        elif kind == "msg":
            v = self.validators[ev[1]]
            if v.runtime is not None:
                v.runtime.on_message(ev[2], ev[3], self.node_now(v))
        elif kind == "timer":
            v = self.validators[ev[1]]
            if v.runtime is not None and v.incarnation == ev[2]:
                v.runtime.on_timer(ev[3], ev[4], ev[5], self.node_now(v))
        elif kind == "arrive":
            self.arrive(ev[1], ev[2], ev[3], self.validators[ev[4]])
        elif kind == "submit":
            self.submit(ev[1], ev[2], attempt=ev[3])
        elif kind == "fault" and not self.calm:
            self.fault(self.sc.faults[ev[1]], ev[2])
        elif kind == "boundary":
            self.households_act(ev[1])

    def run_until(self, until_ms: int) -> None:
        times, by_time, step = self.times, self.at, self.step
        while times and times[0] <= until_ms:
            at = heapq.heappop(times)
            self.now = at
            # an event pushed for this same time while these run gets a new list, run next: the
            # order is still (time, push order)
            for ev in by_time.pop(at):
                step(ev)
        self.now = max(self.now, until_ms)

    def height(self) -> int:
        return max((v.runtime.state.height for v in self.validators if v.runtime), default=0)

    def honest(self) -> list[_Validator]:
        return [v for v in self.validators if v.runtime is not None and not v.byzantine]


@dataclass(slots=True)
class _Batteries:
    """What every household's battery did (KPIs), indexed like the households. The batteries
    themselves and their state of charge belong to the households' agents."""

    soc_wh: list[int]  # after the last dispatch (starts as the agents start: half full)
    present: bool  # any household has one
    start_soc_wh: list[int] = field(default_factory=list)
    charged_wh: list[int] = field(default_factory=list)
    discharged_wh: list[int] = field(default_factory=list)
    loss_wh: list[int] = field(default_factory=list)
    by_slot: dict[int, tuple[int, int]] = field(default_factory=dict)  # slot -> (charged, disch.)

    def __post_init__(self) -> None:
        n = len(self.soc_wh)
        self.start_soc_wh = list(self.soc_wh)
        self.charged_wh, self.discharged_wh, self.loss_wh = [0] * n, [0] * n, [0] * n

    def record(self, i: int, slot: int, d: Dispatch) -> None:
        """Household ``i``'s battery dispatched ``d`` over ``slot``."""
        self.soc_wh[i] = d.soc_wh
        self.charged_wh[i] += d.charged_wh
        self.discharged_wh[i] += d.discharged_wh
        self.loss_wh[i] += d.loss_wh
        charged, discharged = self.by_slot.get(slot, (0, 0))
        self.by_slot[slot] = (charged + d.charged_wh, discharged + d.discharged_wh)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40] or "scenario"


# ---------------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run with :data:`GC_THRESHOLDS`; the caller's thresholds are restored after."""
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)


@_fewer_collections()
def run_inproc(
    scenario: Scenario,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    trades_out: TradeSink | None = None,
    first_slot: int | None = None,
    full_node: str = "auto",
    chain_out: Callable[[Genesis, MemoryStore], object] | None = None,
    fit_workers: int | None = None,
) -> SimResult:
    """Run ``scenario`` in process (see the module rules). Ctrl-C (``KeyboardInterrupt``) or
    ``should_stop()`` returning true ends the run early with ``interrupted=True`` and what was done.

    ``progress`` is called after every slot boundary; every committed trade is appended to
    ``trades_out`` (if given) as a row ``slot, buyer, seller, buyer_name, seller_name, energy_wh,
    price_micro_per_kwh, amount_micro, height``.

    ``first_slot`` numbers the run's slots from this slot instead of the data calendar's (the
    households still replay ``start_day`` at ``start_hour`` from the first slot on): to run exactly
    the slots of a daemon run, whose slot numbers follow the wall clock
    (:func:`sims.daemon_engine.inproc_twin`); order ids include the slot number.

    ``full_node``: where the sample full node re-verifies the chain (:mod:`sims.fullnode`):
    ``"process"`` (a second process, fed as blocks are decided: uses the second core),
    ``"inline"`` (this process), or ``"auto"`` (a process from ``PARALLEL_FULL_NODE_FROM``
    household-slots on). Same results either way.

    ``fit_workers``: how many worker processes fit the forecasters (:mod:`sims.fitpool`: the
    blocks of a fit spread over them, the next refit period's fit started ahead); ``0`` fits in
    this process; ``None`` (auto) uses ``FIT_WORKERS`` of them from ``PARALLEL_FULL_NODE_FROM``
    household-slots on under forecast bidding. Same results either way.

    ``chain_out`` is called at the end with the genesis and the store of the validator whose chain
    the results report (the highest; e.g. to export it for ``gridnode audit``)."""
    if full_node not in ("auto", "process", "inline"):
        raise UsageError(f"full_node must be auto, process or inline, got {full_node!r}")
    if fit_workers is not None and fit_workers < 0:
        raise UsageError(f"fit_workers must be >= 0, got {fit_workers}")
    wall0 = time.perf_counter()
    big = scenario.households * scenario.slots >= PARALLEL_FULL_NODE_FROM
    if fit_workers is None:
        fit_workers = FIT_WORKERS if big and scenario.policy == Bidding.FORECAST else 0
    e = _Engine(scenario, first_slot=first_slot, fit_workers=fit_workers)
    parallel = full_node == "process" or (full_node == "auto" and big)
    if parallel:
        e.full_node = SampleFullNodeProcess(e.genesis, (e.first_slot, e.last_slot))
    sc = scenario
    clock = e.clock
    begin_ms = e.now
    for v in e.validators:
        e.boot(v)
    e.schedule_faults(clock.start(e.first_slot) * 1000)
    boundaries = range(e.first_slot, e.last_slot + 2)  # the last one sends the last readings
    for b in boundaries:
        e.push(clock.start(b) * 1000 + QUOTE_OFFSET_MS, ("boundary", b))
    e.push(begin_ms + QUOTE_OFFSET_MS, ("boundary", e.first_slot - 1))
    interrupted = False
    slots_done = 0
    try:
        for b in boundaries:
            if should_stop is not None and should_stop():
                interrupted = True
                break
            e.run_until(clock.start(b) * 1000 + QUOTE_OFFSET_MS)
            if isinstance(e.full_node, SampleFullNodeProcess):
                e.full_node.flush()
            slots_done = min(sc.slots, b - e.first_slot)
            if progress is not None:
                progress(Progress(e.now // 1000, slots_done, sc.slots, e.height()))
        if not interrupted:
            # readings are in: run until the last slot is settled, then let the honest validators agree
            settle_ms = (clock.end(e.last_slot) + sc.reading_deadline_seconds + 1) * 1000
            e.run_until(settle_ms + 2 * sc.block_interval_s * 1000)
            _calm(e)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if isinstance(e.full_node, SampleFullNodeProcess):
            e.full_node.close()
        raise
    finally:
        e.training.close()
    result = collect(e, slots_done=slots_done, interrupted=interrupted, trades_out=trades_out)
    result.wall_seconds = round(time.perf_counter() - wall0, 3)
    if chain_out is not None:
        chain_out(e.genesis, reference(e).store)
    return result


def _calm(e: _Engine) -> None:
    """Heal every fault; restart crashed validators; run until all honest validators share a head."""
    e.calm = True  # faults still scheduled are dropped
    e.blocked.clear()
    e.fault_drop.clear()
    e.drop_rate = 0.0
    e.set_loss()
    for v in e.validators:
        v.byzantine = ""
        v.skew_ms = 0
        if v.runtime is None:
            e.boot(v)
    deadline = e.now + CALM_LIMIT_MS
    step_ms = e.sc.block_interval_s * 1000
    while e.now < deadline:
        e.run_until(e.now + step_ms)
        heads = {v.runtime.state.height for v in e.validators if v.runtime is not None}
        if len(heads) == 1:
            return

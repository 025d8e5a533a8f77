"""The fault campaign with the real ledger as the replicated application (``--app ledger``).

Every seed builds a small community (8 member households, the campaign's validators) on a fast clock
(2-second slots, 1-second gate lead, 2-second reading deadline) so slots open, close, clear and settle
many times within one run. Households submit signed orders and meter readings, as ``txs`` says
(:data:`TX_KINDS`):

* ``bundle`` (the default: what a household's daemon sends since stop 26) — each submission is one
  ``gn.tx.bundle``: the household's reading of the last delivered slot (the first time it sends in
  that slot's reading window) and one order, signed once;
* ``separate`` — the kinds before the bundle: about 30 % of submissions a ``gn.tx.reading``, the
  rest a ``gn.tx.order`` (the campaign's transcript before stop 27, seed for seed).

With a fixed share a Byzantine *seller* signs two different orders with the same nonce for the same
slot (double-selling its energy) and sends both (as bundles: the second carries the order alone).
On top of the consensus checks, every run checks the ledger:

* ``state_digest`` — honest nodes at the same height hold byte-identical ledger states;
* ``conservation`` — on every node, Σ balances = 0 (grid and pool included) and Σ bought = Σ sold;
* ``energy_sold_twice`` — no (household, nonce) appears in two committed orders (on their own or in
  bundles), so no double-signed order pair ever got both halves in.

The negative control ``ledger-nonce`` breaks one rule on purpose (admission forgets the household's
last nonce), and the checks must report double-selling.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from gridnode.core.app import LedgerApp
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    BundleReading,
    Genesis,
    SignedBundle,
    SignedOrder,
    SignedReading,
    Tx,
    decode_block,
    sign_bundle,
    sign_order,
    sign_reading,
    tx_id,
)
from gridnode.core.ledger import rules as ledger_rules
from market.errors import InvalidInput
from market.orders import Order, Side, Step
from sims.simnet import RunResult, Simulation, Violation

__all__ = ["TX_KINDS", "LedgerWorld", "broken_nonce_rule"]

EPOCH_MS = 1_800_000_000_000
#: what the households submit (module docstring); the first is the default
TX_KINDS: Final = ("bundle", "separate")


@dataclass
class LedgerWorld:
    """One seed's community, transaction source and ledger checks."""

    seed: int
    validators: int
    members: int = 8
    double_sign_share: float = 0.1
    txs: str = TX_KINDS[0]
    keys: list[KeyPair] = field(init=False)
    validator_keys: list[KeyPair] = field(init=False)
    genesis: Genesis = field(init=False)
    double_signs: int = 0
    committed_txs: int = 0
    #: the orders and readings in the committed transactions (a bundle counts its parts)
    committed_orders: int = 0
    committed_readings: int = 0
    settled_slots: int = 0
    _nonce: dict[str, int] = field(default_factory=dict)
    _pending: list[Tx] = field(default_factory=list)
    _read: set[tuple[int, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.txs not in TX_KINDS:
            raise ValueError(f"unknown txs {self.txs!r} (one of {', '.join(TX_KINDS)})")
        rng = random.Random(f"ledger-world-{self.seed}")
        self.keys = [KeyPair.from_rng(rng) for _ in range(self.members)]
        self.validator_keys = [KeyPair.from_rng(rng) for _ in range(self.validators)]
        self.genesis = Genesis(
            community_id="campaign",
            genesis_time_ms=EPOCH_MS,
            members=tuple(k.public_hex for k in self.keys),
            validators=tuple(k.public_hex for k in self.validator_keys),
            slot_seconds=2,
            gate_lead_seconds=1,
            reading_deadline_seconds=2,
            max_drift_ms=10_000,
        )

    # ------------------------------------------------------------------ simulation hooks
    def app_factory(self, name: str) -> LedgerApp:
        proposer = ""
        if name.startswith("v") and name[1:].isdigit() and int(name[1:]) < self.validators:
            proposer = self.validator_keys[int(name[1:])].public_hex
        return LedgerApp(self.genesis, proposer=proposer)

    def _order(
        self, key: KeyPair, rng: random.Random, slot: int, nonce: int, side: Side
    ) -> SignedOrder:
        return sign_order(key, self.genesis, self._market_order(key, rng, slot, nonce, side))

    def _market_order(
        self, key: KeyPair, rng: random.Random, slot: int, nonce: int, side: Side
    ) -> Order:
        return Order(
            order_id=f"{key.public_hex[:8]}-{nonce}-{rng.randrange(10**6)}",
            household=key.public_hex,
            side=side,
            slot=slot,
            steps=(Step(rng.randint(80_000, 300_000), rng.randint(1, 2_000)),),
            nonce=nonce,
        )

    def tx_source(self, rng: random.Random, now_ms: int) -> tuple[bytes, Any] | None:
        if self._pending:
            queued = self._pending.pop()
            return tx_id(queued), queued
        if self.txs == "bundle":
            return self._bundle_source(rng, now_ms)
        clock = self.genesis.clock
        now_s = now_ms // 1000
        i = rng.randrange(self.members)
        key = self.keys[i]
        if rng.random() < 0.3:  # a meter reading for the last delivered slot
            slot = clock.slot_at(now_s) - 1
            if (slot, key.public_hex) in self._read:
                return None
            self._read.add((slot, key.public_hex))
            reading = sign_reading(key, self.genesis, slot=slot, net_wh=rng.randint(-2_000, 2_000))
            return tx_id(reading), reading
        slot = clock.first_open_slot(now_s) + rng.randint(0, 1)
        nonce = self._nonce.get(key.public_hex, 0) + 1
        self._nonce[key.public_hex] = nonce
        side = Side.SELL if i % 2 else Side.BUY
        first = self._order(key, rng, slot, nonce, side)
        if side is Side.SELL and rng.random() < self.double_sign_share:
            # a Byzantine seller: a second, different order with the same nonce for the same energy
            self._pending.append(self._order(key, rng, slot, nonce, side))
            self.double_signs += 1
        return tx_id(first), first

    def _bundle_source(self, rng: random.Random, now_ms: int) -> tuple[bytes, Any]:
        """One household's bundle: its reading of the last delivered slot if it has not sent one,
        and one order (what a daemon sends at a slot boundary, module docstring)."""
        clock = self.genesis.clock
        now_s = now_ms // 1000
        i = rng.randrange(self.members)
        key = self.keys[i]
        reading = None
        delivered = clock.slot_at(now_s) - 1
        if (delivered, key.public_hex) not in self._read:
            self._read.add((delivered, key.public_hex))
            reading = BundleReading(delivered, rng.randint(-2_000, 2_000))
        slot = clock.first_open_slot(now_s) + rng.randint(0, 1)
        nonce = self._nonce.get(key.public_hex, 0) + 1
        self._nonce[key.public_hex] = nonce
        side = Side.SELL if i % 2 else Side.BUY
        order = self._market_order(key, rng, slot, nonce, side)
        first = sign_bundle(key, self.genesis, reading=reading, orders=(order,))
        if side is Side.SELL and rng.random() < self.double_sign_share:
            # a Byzantine seller: a second, different order with the same nonce for the same energy
            twin = self._market_order(key, rng, slot, nonce, side)
            self._pending.append(sign_bundle(key, self.genesis, orders=(twin,)))
            self.double_signs += 1
        return tx_id(first), first

    # ------------------------------------------------------------------ checks
    def check(self, sim: Simulation, res: RunResult) -> list[Violation]:
        del res
        out: list[Violation] = []
        digests: dict[int, set[bytes]] = {}
        longest: Any = None
        for name in sorted(sim.nodes):
            app = sim.nodes[name].app
            if not isinstance(app, LedgerApp):
                continue
            state = app.state
            digests.setdefault(state.height, set()).add(state.digest())
            if sum(state.balances.values()) != 0:
                out.append(
                    Violation(
                        "conservation", f"{name}: balances sum to {sum(state.balances.values())}"
                    )
                )
            bought = sum(t.bought_p2p_wh for t in state.totals.values())
            sold = sum(t.sold_p2p_wh for t in state.totals.values())
            if bought != sold:
                out.append(Violation("conservation", f"{name}: bought {bought} != sold {sold}"))
            if longest is None or state.height > longest[1].height:
                longest = (sim.nodes[name], state)
        out += [
            Violation("state_digest", f"height {h}: {len(d)} states")
            for h, d in digests.items()
            if len(d) > 1
        ]
        if longest is not None:
            seen: set[tuple[str, int]] = set()
            self.settled_slots = longest[1].settled_slots
            for sb in longest[0].store.blocks_from(0, 1 << 30):
                txs = decode_block(sb.block).txs
                self.committed_txs += len(txs)
                for tx in txs:
                    orders: tuple[Order, ...] = ()
                    if isinstance(tx, SignedOrder):
                        orders = (tx.order,)
                    elif isinstance(tx, SignedBundle):
                        orders = tx.orders
                        self.committed_readings += tx.reading is not None
                    elif isinstance(tx, SignedReading):
                        self.committed_readings += 1
                    self.committed_orders += len(orders)
                    for order in orders:
                        key = (order.household, order.nonce)
                        if key in seen:
                            out.append(
                                Violation(
                                    "energy_sold_twice",
                                    f"{order.household[:12]} nonce {order.nonce} committed twice",
                                )
                            )
                        seen.add(key)
        return out


@contextlib.contextmanager
def broken_nonce_rule() -> Iterator[None]:
    """Negative control: admission forgets every household's last nonce (replays get in)."""
    original = ledger_rules._admit

    def forgetful(draft: Any, tx: Tx, time_ms: int, *, write: bool = True) -> None:
        # a refused transaction leaves the draft as it found it (a proposer filters it out and
        # goes on with the same draft: a forgotten nonce left behind would be in the proposer's
        # state root and not in the validators', which never see the refused transaction)
        h, owned = tx.household, "nonces" in draft._own
        nonces, keys, had, last = draft.nonces, set(draft._nonce_keys), h in draft.nonces, None
        if had:
            last = draft.nonces[h]
        draft.set_nonce(h, -1)
        try:
            original(draft, tx, time_ms, write=write)
        except InvalidInput:
            if not owned:
                draft.nonces = nonces
                draft._own.discard("nonces")
            elif had:
                draft.nonces[h] = last
            else:
                del draft.nonces[h]
            draft._nonce_keys = keys
            raise

    ledger_rules._admit = forgetful
    try:
        yield
    finally:
        ledger_rules._admit = original

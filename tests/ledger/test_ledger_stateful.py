"""Stateful test: the ledger against a naive reference model of open orders, nonces, readings and
money.

The reference knows the rules of each separate kind (order, cancel, reading) and nothing of
bundles: a bundle is its parts applied in its order to a scratch copy of the model, all or nothing,
refused with the first refused part's reason (an order of another household: ``bad_signature``).
Every submission checks the reason the ledger gives (``admission_error``) against the model's.
A slot every member read is settled at once and keeps its readings until its deadline, so a
second reading of it is still ``duplicate_reading`` (``tests/ledger/test_settle_once.py``).
"""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gridnode.core.ledger import (
    BundleReading,
    OpenOrder,
    SignedBundle,
    SignedCancel,
    SignedOrder,
    SignedReading,
    Tx,
    admission_error,
    sign_cancel,
    sign_reading,
)
from market.codec import pack
from market.errors import LedgerReason, OrderReason, Reason
from market.orders import Order, Side, Step
from tests.ledger.helpers import T0_MS, Community

SLOT_MS = 900_000
MAX_AHEAD = 3  # the genesis' max_order_ahead_slots: small, so too-far-ahead orders are generated
N_MEMBERS = 4
MODEL = bytes(range(1, 33))  # a model hash no block committed
TOO_MUCH_WH = 10**9 + 1  # above the default limits' max_energy_wh

OrderSpec: TypeAlias = tuple[
    int, Side, int, int
]  # (slots ahead of the first open, side, price, Wh)
DEFECTS = (
    "none",
    "none",
    "none",
    "reading_too_large",  # its reading's |net_wh| is above the limit
    "other_household",  # its last order is another member's (the signer signs it anyway)
    "id_twice",  # its last order reuses the id of the one before it
    "open_id",  # its last order reuses the id of an open order
    "stale_nonce",  # its last order's nonce is not above the one before it (or the ledger's)
    "unknown_model",  # its last order names a model no block committed
    "forged",  # its signature is not the household's
)


@dataclasses.dataclass
class Model:
    """The reference: what the ledger should hold after the transactions it admitted."""

    open: dict[tuple[int, str], OpenOrder] = dataclasses.field(default_factory=dict)
    nonces: dict[str, int] = dataclasses.field(default_factory=dict)
    readings: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)  # unsettled

    def copy(self) -> Model:
        return Model(
            dict(self.open), dict(self.nonces), {s: dict(r) for s, r in self.readings.items()}
        )


class LedgerVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Community(
            n_members=N_MEMBERS, seed=7, genesis_kwargs={"max_order_ahead_slots": MAX_AHEAD}
        )
        self.g = self.c.genesis
        self.state = self.c.state()
        self.time_ms = T0_MS
        self.m = Model()
        self.history: list[Tx] = []  # admitted transactions that placed or cancelled orders

    # --------------------------------------------------------------- the model
    def first_open_slot(self, time_ms: int) -> int:
        return self.g.clock.first_open_slot(time_ms // 1000)

    def window_refusal(self, slot: int, now_s: int) -> Reason | None:
        first = self.g.clock.first_open_slot(now_s)
        if slot < first:
            return OrderReason.SLOT_CLOSED
        if slot > first + MAX_AHEAD:
            return OrderReason.SLOT_TOO_FAR_AHEAD
        return None

    def order_refusal(
        self, m: Model, order: Order, model: bytes | None, now_s: int
    ) -> Reason | None:
        if order.nonce <= m.nonces.get(order.household, -1):
            return LedgerReason.STALE_NONCE
        why = self.window_refusal(order.slot, now_s)
        if why is not None:
            return why
        if model is not None:
            return LedgerReason.UNKNOWN_MODEL
        previous = m.open.get((order.slot, order.household))
        in_use = {o.order.order_id for o in m.open.values()}
        if order.order_id in in_use and (
            previous is None or previous.order.order_id != order.order_id
        ):
            return OrderReason.DUPLICATE_ID
        return None

    def reading_refusal(
        self, m: Model, household: str, slot: int, net_wh: int, now_s: int
    ) -> Reason | None:
        end = self.g.clock.end(slot)
        if now_s < end:
            return LedgerReason.SLOT_NOT_DELIVERED
        if now_s >= end + self.g.reading_deadline_seconds:
            return LedgerReason.READING_TOO_LATE
        if household in m.readings.get(slot, {}):
            return LedgerReason.DUPLICATE_READING
        if abs(net_wh) > self.g.limits.max_energy_wh:
            return OrderReason.ENERGY_TOO_LARGE
        return None

    def refusal(self, m: Model, tx: Tx, now_s: int) -> Reason | None:
        """Why the reference refuses ``tx`` on ``m`` at ``now_s`` (``None``: admitted; then ``m``
        holds its effects)."""
        h = tx.household
        if isinstance(tx, SignedOrder):
            why = self.order_refusal(m, tx.order, tx.model, now_s)
            if why is None:
                m.open[(tx.order.slot, h)] = tx
                m.nonces[h] = tx.order.nonce
            return why
        if isinstance(tx, SignedCancel):
            if tx.nonce <= m.nonces.get(h, -1):
                return LedgerReason.STALE_NONCE
            why = self.window_refusal(tx.slot, now_s)
            if why is None and (tx.slot, h) not in m.open:
                why = LedgerReason.NO_OPEN_ORDER
            if why is None:
                del m.open[(tx.slot, h)]
                m.nonces[h] = tx.nonce
            return why
        if isinstance(tx, SignedReading):
            why = self.reading_refusal(m, h, tx.slot, tx.net_wh, now_s)
            if why is None:
                m.readings.setdefault(tx.slot, {})[h] = tx.net_wh
            return why
        assert isinstance(tx, SignedBundle)
        key = next(k for k in self.c.members if k.public_hex == h)
        if tx.signature != key.sign(self.g.domain("bundle"), pack(tx.body())):  # deterministic
            return LedgerReason.BAD_SIGNATURE
        scratch = m.copy()  # the parts one after another; nothing of them unless all pass
        if tx.reading is not None:
            r = tx.reading
            why = self.reading_refusal(scratch, h, r.slot, r.net_wh, now_s)
            if why is not None:
                return why
            scratch.readings.setdefault(r.slot, {})[h] = r.net_wh
        for placed in tx.placed():
            o = placed.order
            if o.household != h:
                return LedgerReason.BAD_SIGNATURE
            why = self.order_refusal(scratch, o, placed.model, now_s)
            if why is not None:
                return why
            scratch.open[(o.slot, h)] = placed
            scratch.nonces[h] = o.nonce
        m.open, m.nonces, m.readings = scratch.open, scratch.nonces, scratch.readings
        return None

    def settle(self, now_s: int) -> None:
        """What the block's clearing and settlement do to the model: cleared slots' orders go,
        a slot's readings go at its deadline (a slot every member read was settled at once, and
        keeps them until then: a second reading of it is a duplicate)."""
        first_open = self.g.clock.first_open_slot(now_s)
        self.m.open = {k: v for k, v in self.m.open.items() if k[0] >= first_open}
        for slot in list(self.m.readings):
            if now_s >= self.g.clock.end(slot) + self.g.reading_deadline_seconds:
                del self.m.readings[slot]

    def submit(self, tx: Tx, dt_ms: int) -> bool:
        """Offer ``tx`` alone in a block ``dt_ms`` later; the ledger's verdict and reason must be
        the model's. Whether it was admitted."""
        now_ms = self.time_ms + dt_ms
        expected = self.refusal(self.m, tx, now_ms // 1000)
        err = admission_error(self.state, tx, time_ms=now_ms)
        assert (None if err is None else err.reason) == expected, err
        kept = self.commit([tx], dt_ms)
        assert kept == ([tx] if expected is None else [])
        return expected is None

    def commit(self, txs: list[Tx], dt_ms: int) -> list[Tx]:
        self.time_ms += dt_ms
        block, self.state = self.c.block(self.state, self.time_ms, txs)
        self.settle(self.time_ms // 1000)
        return list(block.txs)

    def next_order(
        self, member: int, spec: OrderSpec, now_ms: int, oid: str | None = None
    ) -> Order:
        ahead, side, price, energy = spec
        key = self.c.members[member]
        self.c.nonce[key.public_hex] += 1
        n = self.c.nonce[key.public_hex]
        slot = self.first_open_slot(now_ms) + ahead
        return Order(oid or f"m{member}-{n}", key.public_hex, side, slot, (Step(price, energy),), n)

    # --------------------------------------------------------------- rules
    @rule(
        member=st.integers(0, N_MEMBERS - 1),
        side=st.sampled_from([Side.BUY, Side.SELL]),
        ahead=st.integers(-1, MAX_AHEAD + 1),
        price=st.integers(80_000, 300_000),
        energy=st.integers(1, 3000),
        dt=st.integers(1, 200_000),
    )
    def place(self, member: int, side: Side, ahead: int, price: int, energy: int, dt: int) -> None:
        slot = self.first_open_slot(self.time_ms + dt) + ahead
        tx = self.c.order(member, side, slot, (price, energy))
        if self.submit(tx, dt):
            self.history.append(tx)

    @precondition(lambda self: bool(self.m.open))
    @rule(pick=st.integers(0, 10**6), dt=st.integers(1, 100_000))
    def cancel(self, pick: int, dt: int) -> None:
        slot, h = sorted(self.m.open)[pick % len(self.m.open)]
        key = next(k for k in self.c.members if k.public_hex == h)
        self.c.nonce[h] += 1
        tx = sign_cancel(key, self.g, slot=slot, nonce=self.c.nonce[h])
        if self.submit(tx, dt):
            self.history.append(tx)

    @precondition(lambda self: bool(self.history))
    @rule(pick=st.integers(0, 10**6))
    def replay(self, pick: int) -> None:
        tx = self.history[pick % len(self.history)]
        assert not self.submit(tx, 1)

    @rule(
        member=st.integers(0, N_MEMBERS - 1),
        net=st.one_of(st.integers(-3000, 3000), st.just(TOO_MUCH_WH)),
        back=st.integers(0, 2),
    )
    def reading(self, member: int, net: int, back: int) -> None:
        slot = (self.time_ms + 1) // SLOT_MS - back  # 0: not delivered, 1: due, 2: too late
        self.submit(sign_reading(self.c.members[member], self.g, slot=slot, net_wh=net), 1)

    @rule(
        member=st.integers(0, N_MEMBERS - 1),
        back=st.one_of(st.none(), st.just(1), st.integers(0, 2)),  # None: no reading; 1: due
        net=st.integers(-3000, 3000),
        specs=st.lists(
            st.tuples(
                st.integers(-1, MAX_AHEAD + 1),
                st.sampled_from([Side.BUY, Side.SELL]),
                st.integers(80_000, 300_000),
                st.integers(1, 3000),
            ),
            max_size=3,
            unique_by=lambda t: t[0],  # one order per slot (decoding refuses two)
        ),
        defect=st.sampled_from(DEFECTS),
        pick=st.integers(0, 10**6),
        dt=st.integers(1, 200_000),
    )
    def bundle(
        self,
        member: int,
        back: int | None,
        net: int,
        specs: list[OrderSpec],
        defect: str,
        pick: int,
        dt: int,
    ) -> None:
        now_ms = self.time_ms + dt
        key = self.c.members[member]
        reading = None
        if back is not None:
            slot = now_ms // SLOT_MS - back
            net = TOO_MUCH_WH if defect == "reading_too_large" else net
            reading = BundleReading(slot, net)
        orders = [self.next_order(member, spec, now_ms) for spec in specs]
        if reading is None and not orders:
            return
        models: list[bytes | None] = [None] * len(orders)
        if orders:
            last = orders[-1]
            if defect == "other_household":
                other = self.c.members[(member + 1 + pick % (N_MEMBERS - 1)) % N_MEMBERS]
                orders[-1] = dataclasses.replace(last, household=other.public_hex)
            elif defect == "id_twice" and len(orders) > 1:
                orders[-1] = dataclasses.replace(last, order_id=orders[-2].order_id)
            elif defect == "open_id" and self.m.open:
                taken = sorted(o.order.order_id for o in self.m.open.values())
                orders[-1] = dataclasses.replace(last, order_id=taken[pick % len(taken)])
            elif defect == "stale_nonce":
                before = (
                    orders[-2].nonce if len(orders) > 1 else self.m.nonces.get(key.public_hex, 0)
                )
                orders[-1] = dataclasses.replace(last, nonce=before)
            elif defect == "unknown_model":
                models[-1] = MODEL
        unsigned = SignedBundle(key.public_hex, reading, tuple(orders), tuple(models), b"")
        tx = dataclasses.replace(
            unsigned, signature=key.sign(self.g.domain("bundle"), pack(unsigned.body()))
        )
        if defect == "forged":
            tx = dataclasses.replace(tx, signature=b"\x01" * 64)
        if self.submit(tx, dt) and orders:
            self.history.append(tx)

    @rule(slots=st.integers(1, 3))
    def wait(self, slots: int) -> None:
        self.commit([], slots * SLOT_MS)

    # --------------------------------------------------------------- invariants
    @invariant()
    def open_orders_match_the_model(self) -> None:
        ledger = {(slot, h): o for slot, by_h in self.state.orders.items() for h, o in by_h.items()}
        assert ledger == self.m.open
        assert self.state.open_order_ids == {o.order.order_id for o in self.m.open.values()}

    @invariant()
    def nonces_match_the_model(self) -> None:
        assert dict(self.state.nonces) == self.m.nonces

    @invariant()
    def readings_match_the_model(self) -> None:
        assert {s: dict(r) for s, r in self.state.readings.items()} == self.m.readings

    @invariant()
    def money_and_energy_are_conserved(self) -> None:
        assert sum(self.state.balances.values()) == 0
        totals = self.state.totals.values()
        assert sum(t.bought_p2p_wh for t in totals) == sum(t.sold_p2p_wh for t in totals)
        # what households paid in total is exactly what the grid and the pool hold
        assert sum(t.bill_micro for t in totals) == sum(
            v for k, v in self.state.balances.items() if k in ("grid", "community-pool")
        )


TestLedgerVersusModel = LedgerVersusModel.TestCase
TestLedgerVersusModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)

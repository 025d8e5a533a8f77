"""Stateful test: the ledger against a naive reference model of open orders, nonces and money."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gridnode.core.ledger import SignedCancel, SignedOrder, Tx, sign_cancel, sign_reading
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community

SLOT_MS = 900_000


class LedgerVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Community(n_members=4, seed=7)
        self.state = self.c.state()
        self.time_ms = T0_MS
        self.open: dict[tuple[int, str], SignedOrder] = {}  # the model's open orders
        self.nonces: dict[str, int] = {}
        self.history: list[Tx] = []
        self.read: set[tuple[int, str]] = set()

    # --------------------------------------------------------------- the model
    def first_open_slot(self, time_ms: int) -> int:
        return self.c.genesis.clock.first_open_slot(time_ms // 1000)

    def expect_admitted(self, tx: Tx, time_ms: int) -> bool:
        h = tx.household
        if isinstance(tx, SignedOrder):
            nonce, slot = tx.order.nonce, tx.order.slot
        elif isinstance(tx, SignedCancel):
            nonce, slot = tx.nonce, tx.slot
        else:
            return False
        if nonce <= self.nonces.get(h, -1) or slot < self.first_open_slot(time_ms):
            return False
        return isinstance(tx, SignedOrder) or (slot, h) in self.open

    def model_apply(self, tx: Tx) -> None:
        h = tx.household
        if isinstance(tx, SignedOrder):
            self.open[(tx.order.slot, h)] = tx
            self.nonces[h] = tx.order.nonce
        else:
            del self.open[(tx.slot, h)]  # type: ignore[union-attr]
            self.nonces[h] = tx.nonce  # type: ignore[union-attr]

    def commit(self, txs: list[Tx], dt_ms: int) -> list[Tx]:
        self.time_ms += dt_ms
        block, self.state = self.c.block(self.state, self.time_ms, txs)
        first_open = self.first_open_slot(self.time_ms)
        self.open = {k: v for k, v in self.open.items() if k[0] >= first_open}  # cleared
        return list(block.txs)

    # --------------------------------------------------------------- rules
    @rule(
        member=st.integers(0, 3),
        side=st.sampled_from([Side.BUY, Side.SELL]),
        ahead=st.integers(-1, 3),
        price=st.integers(80_000, 300_000),
        energy=st.integers(1, 3000),
        dt=st.integers(1, 200_000),
    )
    def place(self, member: int, side: Side, ahead: int, price: int, energy: int, dt: int) -> None:
        slot = self.first_open_slot(self.time_ms + dt) + ahead
        tx = self.c.order(member, side, slot, (price, energy))
        expected = self.expect_admitted(tx, self.time_ms + dt)
        kept = self.commit([tx], dt)
        assert (kept == [tx]) == expected
        if expected:
            self.model_apply(tx)
        self.history.append(tx)

    @precondition(lambda self: bool(self.open))
    @rule(pick=st.integers(0, 10**6), dt=st.integers(1, 100_000))
    def cancel(self, pick: int, dt: int) -> None:
        slot, h = sorted(self.open)[pick % len(self.open)]
        key = next(k for k in self.c.members if k.public_hex == h)
        self.c.nonce[h] += 1
        tx = sign_cancel(key, self.c.genesis, slot=slot, nonce=self.c.nonce[h])
        expected = self.expect_admitted(tx, self.time_ms + dt)
        kept = self.commit([tx], dt)
        assert (kept == [tx]) == expected
        if expected:
            self.model_apply(tx)

    @precondition(lambda self: bool(self.history))
    @rule(pick=st.integers(0, 10**6))
    def replay(self, pick: int) -> None:
        assert self.commit([self.history[pick % len(self.history)]], 1) == []

    @rule(member=st.integers(0, 3), net=st.integers(-3000, 3000), back=st.integers(1, 2))
    def reading(self, member: int, net: int, back: int) -> None:
        slot = self.time_ms // SLOT_MS - back
        tx = sign_reading(self.c.members[member], self.c.genesis, slot=slot, net_wh=net)
        self.commit([tx], 1)  # admitted or not by the deadline rule; money invariants below

    @rule(slots=st.integers(1, 3))
    def wait(self, slots: int) -> None:
        self.commit([], slots * SLOT_MS)

    # --------------------------------------------------------------- invariants
    @invariant()
    def open_orders_match_the_model(self) -> None:
        ledger = {(slot, h): o for slot, by_h in self.state.orders.items() for h, o in by_h.items()}
        assert ledger == self.open

    @invariant()
    def nonces_match_the_model(self) -> None:
        assert dict(self.state.nonces) == self.nonces

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
TestLedgerVersusModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)

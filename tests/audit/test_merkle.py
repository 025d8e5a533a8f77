"""Merkle trees as RFC 9162 defines them, and the state root as docs/merkle.md specifies it."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.core.ledger import LedgerState
from gridnode.core.ledger.stateroot import (
    BILL_FIELDS,
    _bill_line,
    _trade_wires,
    slot_leaf_entry,
)
from gridnode.core.merkle import (
    EMPTY_ROOT,
    FixedTree,
    inclusion_path,
    leaf_hash,
    tree_root,
    verify_inclusion,
)
from market.clearing import Trade
from market.codec import pack
from market.settlement import GRID, POOL, HouseholdBill
from tests.audit.helpers import small_chain


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, recursively, over the entries' data."""
    n = len(entries)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + entries[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return _sha(b"\x01" + _mth(entries[:k]) + _mth(entries[k:]))


def _rfc_path(m: int, entries: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    n = len(entries)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_rfc_path(m, entries[:k]), _mth(entries[k:])]
    return [*_rfc_path(m - k, entries[k:]), _mth(entries[:k])]


def _entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_hashing_matches_rfc_9162_for_every_size_up_to_70() -> None:
    assert tree_root([]) == EMPTY_ROOT == _sha(b"")
    for n in range(1, 71):
        data = _entries(n)
        leaves = [leaf_hash(d) for d in data]
        root = tree_root(leaves)
        assert root == _mth(data)
        assert FixedTree(leaves).root == root
        for m in range(n):
            path = inclusion_path(leaves, m)
            assert path == _rfc_path(m, data)
            assert verify_inclusion(leaves[m], m, n, path, root)


def test_a_wrong_leaf_index_size_or_path_does_not_verify() -> None:
    data = _entries(13)
    leaves = [leaf_hash(d) for d in data]
    root = tree_root(leaves)
    path = inclusion_path(leaves, 6)
    assert verify_inclusion(leaves[6], 6, 13, path, root)
    assert not verify_inclusion(leaves[5], 6, 13, path, root)
    assert not verify_inclusion(leaves[6], 7, 13, path, root)
    # (the size is not proven by a path: 12 or 14 give the same shape at leaf 6; the state root
    # authenticates every tree's size, docs/merkle.md)
    assert not verify_inclusion(leaves[6], 6, 17, path, root)
    assert not verify_inclusion(leaves[6], 13, 13, path, root)
    assert not verify_inclusion(leaves[6], 6, 13, path[:-1], root)
    assert not verify_inclusion(leaves[6], 6, 13, [*path, path[0]], root)
    for i in range(len(path)):
        for bit in (0, 7):
            bad = list(path)
            bad[i] = bytes([bad[i][0] ^ (1 << bit)]) + bad[i][1:]
            assert not verify_inclusion(leaves[6], 6, 13, bad, root)
    # a leaf hash cannot pass for an inner node: the prefixes differ
    inner = path[-1]
    assert not verify_inclusion(inner, 1, 2, [leaves[0]], root)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_an_updated_fixed_tree_equals_a_fresh_one(n: int, seed: int) -> None:
    rng = random.Random(seed)
    leaves = [leaf_hash(rng.randbytes(8)) for _ in range(n)]
    tree = FixedTree(leaves)
    for _ in range(3):
        changes = {rng.randrange(n): leaf_hash(rng.randbytes(8)) for _ in range(rng.randint(0, 9))}
        before = tree.root
        new = tree.updated(changes)
        for i, h in changes.items():
            leaves[i] = h
        assert new.root == tree_root(leaves)
        assert tree.root == before  # the old tree is never written
        i = rng.randrange(n)
        assert verify_inclusion(leaves[i], i, n, new.path(i), new.root)
        tree = new


# ------------------------------------------------------------------ the state root, from its spec


def _bill(b: object) -> list[int]:
    return [getattr(b, f) for f in BILL_FIELDS]


def spec_root(state: LedgerState) -> bytes:
    """The state root computed from docs/merkle.md alone: every tree from scratch, RFC 9162 MTH."""
    g = state.genesis
    accounts = []
    for h in g.members:
        t = state.totals.get(h)
        totals = (
            [0] * 7
            if t is None
            else [
                t.bought_p2p_wh,
                t.sold_p2p_wh,
                t.grid_import_wh,
                t.grid_export_wh,
                t.bill_micro,
                t.grid_only_bill_micro,
                t.slots_settled,
            ]
        )
        accounts.append(
            pack(["gn.account", 1, h, state.nonces.get(h, -1), state.balances.get(h, 0), *totals])
        )
    live = sorted(set(state.orders) | set(state.trades) | set(state.readings) | set(state.settled))
    slots = []
    for s in live:
        done = state.settled.get(s)
        trades = done.trades if done else state.trades.get(s, ())
        readings = done.readings if done else state.readings.get(s, {})
        orders = {} if done else state.orders.get(s, {})
        members = []
        for h in g.members:
            idx = g.member_index
            mine = [
                [0, idx[t.seller], t.energy_wh, t.price_micro_per_kwh, t.amount_micro]
                if t.buyer == h
                else [1, idx[t.buyer], t.energy_wh, t.price_micro_per_kwh, t.amount_micro]
                for t in trades
                if h in (t.buyer, t.seller)
            ]
            order = orders.get(h)
            reading = readings.get(h)
            bill = done.bills.get(h) if done else None
            if order is None and not mine and reading is None and bill is None:
                members.append(b"")
            else:
                members.append(
                    pack(
                        [
                            "gn.slotleaf",
                            1,
                            s,
                            h,
                            None if order is None else order.raw,
                            mine,
                            reading,
                            None if bill is None else _bill(bill),
                        ]
                    )
                )
        phase = 2 if done else 1 if s <= state.last_cleared_slot else 0
        slots.append(pack(["gn.slot", 1, s, phase, state.clearing_prices.get(s), _mth(members)]))
    prices = [pack(["gn.price", 1, s, p]) for s, p in sorted(state.clearing_prices.items())]
    record = pack(
        [
            "gn.stateroot",
            1,
            g.hash,
            state.height,
            state.time_ms,
            state.last_cleared_slot,
            state.settled_slots,
            state.balances.get(GRID, 0),
            state.balances.get(POOL, 0),
            len(g.members),
            _mth(accounts),
            len(slots),
            _mth(slots),
            len(prices),
            _mth(prices),
        ]
    )
    return _sha(record)


def test_the_incremental_state_root_is_the_specified_one_at_every_height() -> None:
    chain = small_chain()
    assert any(s.settled for s in chain.states)  # the chain covers every phase
    assert any(s.trades for s in chain.states) and any(s.orders for s in chain.states)
    for state in chain.states:
        assert state.digest() == spec_root(state)


_TRADE_ROWS = st.lists(
    st.tuples(
        st.integers(0, 5), st.integers(0, 5), st.integers(1, 10**9), st.integers(0, 10**6),
        st.integers(0, 2**40),
    ),
    max_size=12,
)  # fmt: skip


@given(_TRADE_ROWS, st.integers(-(10**6), 10**6))
def test_the_members_entries_built_in_the_tree_loop_are_slot_leaf_entry_bytes(
    rows: list[tuple[int, int, int, int, int]], net: int
) -> None:
    """The members tree encodes its changed entries itself (each household's trades as tuples
    made once per trade list, the bill line read by ``attrgetter``): the same bytes as
    :func:`slot_leaf_entry`, wash trades (buyer = seller) included."""
    members = {f"h{i}": i for i in range(6)}
    trades = [Trade(f"h{b}", f"h{s}", "bo", "so", e, p, a) for b, s, e, p, a in rows]
    wires = _trade_wires(trades, members)
    bill = HouseholdBill("h0", net, *range(1, 15))
    for h in members:
        mine = [t for t in trades if h in {t.buyer, t.seller}]
        for b in (None, bill):
            built = pack(
                ["gn.slotleaf", 1, 7, h, None, wires.get(h, ()), net,
                 None if b is None else _bill_line(b)]
            )  # fmt: skip
            assert built == slot_leaf_entry(7, h, None, mine, net, b, members)
    assert set(wires) == {h for t in trades for h in (t.buyer, t.seller)}


def test_the_root_does_not_depend_on_the_memo() -> None:
    from dataclasses import replace

    for state in small_chain().states:
        assert replace(state, memo={}).digest() == state.digest()


@pytest.mark.parametrize("height", [1, 5, 6])
def test_a_snapshot_round_trip_keeps_the_root(height: int) -> None:
    from gridnode.core.ledger import decode_state

    state = small_chain().states[height]
    again = decode_state(state.encode(), state.genesis)
    assert again == state
    assert again.digest() == state.digest()
    assert state.encode() == state._encode_plain()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-2, 40), st.none() | st.integers(0, 9)),
        min_size=1,
        max_size=60,
    )
)
def test_the_prices_tree_kept_along_a_chain_is_the_one_built_afresh(
    steps: list[tuple[int, int, int | None]],
) -> None:
    """The prices tree is extended at its right edge while prices are appended after the last
    slot, rebuilt when one is inserted before it or changed: either way the root over the entries
    in slot order (:func:`tree_root`), whatever the memo holds."""
    from dataclasses import replace

    from gridnode.core.ledger.stateroot import _prices, price_entry

    base = small_chain().states[0]
    memo: dict[object, object] = {}
    prices: dict[int, int | None] = {}
    for kind, slot, price in steps:
        prices = dict(prices)
        if kind < 3:  # mostly appends, some anywhere (an insert before the end, or a change)
            prices[max(prices, default=0) + 1 + kind if kind else slot] = price
        elif prices:
            del prices[min(prices)]  # the tree shrinks: rebuilt
        state = replace(base, clearing_prices=prices, memo=memo)
        leaves = [leaf_hash(price_entry(s, p)) for s, p in sorted(prices.items())]
        assert _prices(state) == (len(leaves), tree_root(leaves))

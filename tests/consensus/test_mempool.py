"""The mempool: duplicates, capacity, deterministic batches, committed transactions dropped."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from gridnode.core.mempool import Mempool


def pool(*, capacity: int = 1000, bad: frozenset[bytes] = frozenset()) -> Mempool[bytes]:
    return Mempool(
        tx_id=lambda tx: hashlib.sha256(tx).digest(),
        check=lambda tx: "rejected" if tx in bad else None,
        size=len,
        capacity=capacity,
    )


def test_duplicates_and_failed_checks_are_rejected_with_a_reason() -> None:
    p = pool(bad=frozenset({b"bad"}))
    assert p.add(b"a").accepted
    assert p.add(b"a").reason == "duplicate"
    assert p.add(b"bad").reason == "rejected"
    assert len(p) == 1


def test_capacity_is_a_hard_limit() -> None:
    p = pool(capacity=2)
    assert p.add(b"a").accepted and p.add(b"b").accepted
    assert p.add(b"c").reason == "full"
    assert len(p) == 2


@given(
    txs=st.lists(st.binary(min_size=1, max_size=20), unique=True, max_size=40), seed=st.randoms()
)
def test_the_batch_does_not_depend_on_arrival_order(txs: list[bytes], seed: object) -> None:
    a, b = pool(), pool()
    for tx in txs:
        a.add(tx)
    shuffled = list(txs)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    for tx in shuffled:
        b.add(tx)
    assert a.batch(max_count=10, max_bytes=100) == b.batch(max_count=10, max_bytes=100)
    whole = a.batch(max_count=1000, max_bytes=10**6)
    assert whole == sorted(txs, key=lambda t: hashlib.sha256(t).digest())


@given(txs=st.lists(st.binary(min_size=1, max_size=30), unique=True, max_size=40))
def test_batches_respect_count_and_byte_limits(txs: list[bytes]) -> None:
    p = pool()
    for tx in txs:
        p.add(tx)
    batch = p.batch(max_count=5, max_bytes=50)
    assert len(batch) <= 5 and sum(map(len, batch)) <= 50
    assert len(set(batch)) == len(batch)


@given(txs=st.lists(st.binary(min_size=1, max_size=30), unique=True, max_size=40))
def test_a_batch_is_a_prefix_of_the_order(txs: list[bytes]) -> None:
    p = pool()
    for tx in txs:
        p.add(tx)
    ordered = p.batch(max_count=1000, max_bytes=10**6)
    batch = p.batch(max_count=5, max_bytes=50)
    assert batch == ordered[: len(batch)]


def test_a_transaction_that_does_not_fit_ends_the_batch() -> None:
    """A household's nonce 2 must not ride ahead of its nonce 1 that did not fit (nonce 1 would
    then be stale, and lost although a validator accepted it)."""
    p: Mempool[tuple[int, bytes]] = Mempool(
        tx_id=lambda t: t[1],
        check=lambda t: None,
        size=lambda t: len(t[1]),
        sort_key=lambda t: (t[0],),
    )
    for tx in [(1, b"aaaa"), (2, b"bbbbbbbb"), (3, b"cc")]:
        p.add(tx)
    assert p.batch(max_count=10, max_bytes=10) == [(1, b"aaaa")]


def test_knows_pending_and_recently_committed_ids() -> None:
    p = pool()
    p.add(b"x")
    p.add(b"y")
    p.remove_committed([hashlib.sha256(b"x").digest()])
    assert p.knows(hashlib.sha256(b"x").digest()) and p.knows(hashlib.sha256(b"y").digest())
    assert not p.knows(hashlib.sha256(b"z").digest())


def test_sort_key_orders_the_batch_before_the_id() -> None:
    p: Mempool[tuple[int, bytes]] = Mempool(
        tx_id=lambda t: t[1], check=lambda t: None, size=lambda t: 1, sort_key=lambda t: (t[0],)
    )
    for tx in [(3, b"a"), (1, b"z"), (2, b"m"), (1, b"b")]:
        p.add(tx)
    assert p.batch(max_count=10, max_bytes=10) == [(1, b"b"), (1, b"z"), (2, b"m"), (3, b"a")]


def test_committed_transactions_are_dropped_and_not_readmitted() -> None:
    p = pool()
    ids = [p.add(tx).tx_id for tx in (b"a", b"b", b"c")]
    assert p.remove_committed([ids[0], ids[2], b"unknown"]) == 2
    assert p.batch(max_count=10, max_bytes=100) == [b"b"]
    assert p.add(b"a").reason == "duplicate"


def test_recheck_drops_what_became_invalid() -> None:
    invalid: set[bytes] = set()
    p: Mempool[bytes] = Mempool(
        tx_id=lambda tx: tx, check=lambda tx: "stale" if tx in invalid else None, size=len
    )
    p.add(b"x")
    p.add(b"y")
    invalid.add(b"x")
    assert p.recheck() == [b"x"]
    assert b"x" not in p and b"y" in p


def test_the_committed_ids_remembered_are_the_latest_ones_seen_again_or_not() -> None:
    p: Mempool[bytes] = Mempool(
        tx_id=lambda tx: tx, check=lambda tx: None, size=len, remember_committed=3
    )
    p.remove_committed([b"a", b"b", b"c"])
    p.remove_committed([b"a", b"d"])  # a again: now newer than b and c; b falls out
    assert [p.knows(x) for x in (b"a", b"b", b"c", b"d")] == [True, False, True, True]
    assert p.add(b"b").accepted and p.add(b"c").reason == "duplicate"


@given(
    txs=st.lists(st.binary(min_size=1, max_size=4), max_size=60),
    committed=st.lists(st.binary(min_size=1, max_size=4), max_size=10),
)
def test_offer_answers_as_add_does(txs: list[bytes], committed: list[bytes]) -> None:
    """``offer`` is ``add`` answering ``None`` or the reason: the same answers, in the same pool
    state, for duplicates, committed ids, a full pool and failed checks."""
    bad = frozenset(tx for tx in txs if tx[0] % 5 == 0)
    a, b = pool(capacity=12, bad=bad), pool(capacity=12, bad=bad)
    ids = [hashlib.sha256(tx).digest() for tx in committed]
    a.remove_committed(ids)
    b.remove_committed(ids)
    for tx in txs:
        added = a.add(tx)
        reason = b.offer(tx)
        assert added.tx_id == hashlib.sha256(tx).digest()
        assert (added.accepted, added.reason) == (reason is None, reason or "")
        assert len(a) == len(b) and a.pending_bytes == b.pending_bytes
    assert a.batch(max_count=100, max_bytes=10**6) == b.batch(max_count=100, max_bytes=10**6)

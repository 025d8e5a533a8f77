"""What the per-transaction shortcuts reuse gives exactly what computing afresh gives (issue 16).

A proposal's transactions a validator already holds are taken as decoded; a Merkle tree that
changes in most of its leaves is rebuilt whole; signatures take the genesis' parsed key bytes;
snapshots walk the sorted members. Each must give the same block, root, answer and bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import pytest

from gridnode.core.app import LedgerApp
from gridnode.core.ledger import SignedOrder, Tx, decode_block, sign_reading, verify_signature
from gridnode.core.merkle import FixedTree, leaf_hash, tree_root, verify_inclusion
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community

OPEN = T0_MS // 900_000 + 2


def _orders(c: Community) -> list[Tx]:
    return [
        c.order(i, Side.SELL if i % 2 else Side.BUY, OPEN, (150_000 + i, 100 * (i + 1)))
        for i in range(6)
    ]


def test_a_block_decoded_with_known_transactions_is_the_block_decoded_from_bytes() -> None:
    c = Community()
    txs = _orders(c)
    block, _ = c.block(c.state(), T0_MS + 500, txs)
    held = {tx.id: tx for tx in txs[::2]}
    plain = decode_block(block.raw)
    reused = decode_block(block.raw, known=held.get)
    assert reused == plain and reused.hash == plain.hash and reused.raw == plain.raw
    assert [tx.raw for tx in reused.txs] == [tx.raw for tx in plain.txs]
    # the ids of the parsed ones come from the lookup's hash: the SHA-256 of their bytes
    assert [tx.id for tx in reused.txs] == [tx.id for tx in plain.txs]
    assert all(tx.id == hashlib.sha256(tx.raw).digest() for tx in reused.txs)
    assert all(reused.txs[i] is txs[i] for i in range(0, 6, 2))  # the held objects themselves
    assert all(reused.txs[i] is not txs[i] for i in range(1, 6, 2))  # the others parsed


def test_a_known_transaction_under_the_id_but_with_other_bytes_is_not_taken() -> None:
    c = Community()
    txs = _orders(c)
    block, _ = c.block(c.state(), T0_MS + 500, txs)
    impostor = _orders(c)[0]  # another order (another nonce): other bytes
    reused = decode_block(block.raw, known=lambda tid: impostor if tid == txs[0].id else None)
    assert reused.txs[0].raw == txs[0].raw and reused.txs[0] is not impostor


def test_a_validator_holding_part_of_a_proposal_reaches_the_proposers_state() -> None:
    c = Community()
    proposer = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    follower = LedgerApp(c.genesis, proposer=c.genesis.validators[1])
    txs = _orders(c)
    for i, tx in enumerate(txs):
        assert proposer.submit(tx).accepted
        if i % 3 == 0:
            assert follower.submit(tx).accepted
    block = proposer.make_block(1, 0, T0_MS + 500)
    assert follower.block_error(1, block, T0_MS + 700) is None
    assert follower.apply(1, block).digest() == proposer.apply(1, block).digest()
    assert len(follower.mempool) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 257, 2000])
def test_a_tree_rebuilt_where_most_leaves_changed_equals_a_fresh_one(n: int) -> None:
    rng = random.Random(n)
    leaves = [leaf_hash(rng.randbytes(8)) for _ in range(n)]
    tree = FixedTree(leaves)
    for share in (1.0, 0.5, 0.49, 0.1):
        k = max(1, int(n * share))
        changes = {i: leaf_hash(rng.randbytes(8)) for i in rng.sample(range(n), k)}
        before = tree.root
        new = tree.updated(changes)
        for i, h in changes.items():
            leaves[i] = h
        assert new.root == tree_root(leaves)
        assert tree.root == before  # the old tree is never written
        for i in rng.sample(range(n), min(n, 5)):
            assert new.path(i) == FixedTree(leaves).path(i)
            assert verify_inclusion(leaves[i], i, n, new.path(i), new.root)
        tree = new


def test_signatures_check_the_same_with_the_genesis_keys_as_with_the_hex() -> None:
    c = Community()
    good = _orders(c)[0]
    reading = sign_reading(c.members[1], c.genesis, slot=OPEN - 3, net_wh=5)
    assert verify_signature(c.genesis, good) and verify_signature(c.genesis, reading)
    assert c.genesis.public_keys[good.household] == bytes.fromhex(good.household)
    stranger = Community(seed=2).genesis  # same community id, other members: the hex path
    assert good.household not in stranger.public_keys
    assert verify_signature(stranger, good)
    forged = dataclasses.replace(good, signature=bytes(64))
    assert not verify_signature(c.genesis, forged) and not verify_signature(stranger, forged)


def test_snapshots_after_many_blocks_are_the_plain_encoding() -> None:
    c = Community(n_members=40)
    app = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    rng = random.Random(3)
    now = T0_MS + 500
    for height in range(1, 30):
        for _ in range(rng.randint(0, 12)):
            member = rng.randrange(40)
            side = Side.SELL if member % 2 else Side.BUY
            slot = app.genesis.clock.first_open_slot(now // 1000) + rng.randint(0, 1)
            app.submit(c.order(member, side, slot, (rng.randint(80_000, 300_000), 100)))
        block = app.make_block(height, 0, now)
        app.apply(height, block)
        if height % 3 == 0:
            assert app.snapshot() == app.state._encode_plain()
        now += rng.randint(100_000, 700_000)
    assert app.state.settled_slots > 0


def test_the_kept_packer_packs_exactly_what_packb_packs() -> None:
    """``market.codec.pack`` keeps one packer per thread: the same bytes as a fresh ``packb``,
    also after a value it could not pack, after a large value (whose packer is dropped) and on
    another thread."""
    import threading

    import msgpack

    from market.codec import pack

    rng = random.Random(5)

    def fresh(value: object) -> bytes:
        out: bytes = msgpack.packb(value, use_bin_type=True, strict_types=False)
        return out

    values: list[object] = [
        ["gn.slotleaf", 1, 2**40, "ab" * 32, rng.randbytes(196), [[0, 3, 5, 7, 9]], None, None],
        [-1, 2**63 - 1, -(2**63), True, False, "é" * 40, b"", []],
        rng.randbytes(300_000),  # larger than the buffer a packer keeps
        ("tuple", "packs", "as", "an", "array"),
    ]
    for value in values:
        assert pack(value) == fresh(value)
    with pytest.raises(TypeError):
        pack([1, object()])
    assert pack(values[0]) == fresh(values[0])  # nothing of the failed value is left behind
    other: list[bytes] = []
    thread = threading.Thread(target=lambda: other.extend(pack(v) for v in values))
    thread.start()
    thread.join()
    assert other == [fresh(v) for v in values]


def test_an_order_decoded_from_plain_values_is_the_one_the_checked_path_builds() -> None:
    """``order_from_wire`` builds an order of the plain types msgpack gives at once; the same
    values as subclasses (which skip that shortcut and take every check) give the same order,
    and bad values still raise the typed errors."""
    from market.codec import order_from_wire, order_to_wire
    from market.errors import InvalidInput, OrderReason, WireReason

    class Int(int):
        pass

    class Str(str):
        __slots__ = ()

    c = Community()
    for tx in _orders(c):
        assert isinstance(tx, SignedOrder)
        wire = order_to_wire(tx.order)
        fast = order_from_wire(wire)
        tag, version, oid, household, side, slot, nonce, steps = wire
        checked = order_from_wire(
            [tag, version, oid, Str(household), Str(side), Int(slot), Int(nonce),
             [[Int(p), Int(e)] for p, e in steps]]
        )  # fmt: skip
        assert fast == checked == tx.order
        assert type(fast.slot) is int and fast.steps == checked.steps
    wire = order_to_wire(_orders(c)[0].order)  # type: ignore[union-attr]
    with pytest.raises(InvalidInput) as bad_side:
        order_from_wire([*wire[:4], "hold", *wire[5:]])
    assert bad_side.value.reason == OrderReason.BAD_SIDE
    with pytest.raises(InvalidInput) as bad_step:
        order_from_wire([*wire[:7], [[1, True]]])
    assert bad_step.value.reason == WireReason.BAD_TYPE


def test_roots_over_the_writes_admission_noted_are_the_roots_built_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block's admission notes which households it wrote in the nonces and each slot's orders
    and readings (``stateroot.note_writes``); the next root rehashes those instead of comparing
    every entry. On a chain with orders, replacements, cancels and readings, proposed by one
    validator and checked by another, every root is the one computed without any memo."""
    from gridnode.core.ledger import rules, sign_cancel
    from gridnode.core.ledger.stateroot import _WRITES, note_writes

    notes: list[int] = []

    def counted(*args: Any) -> None:
        notes.append(1)
        note_writes(*args)

    monkeypatch.setattr(rules, "note_writes", counted)

    c = Community(n_members=30)
    proposer = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    follower = LedgerApp(c.genesis, proposer=c.genesis.validators[1])
    rng = random.Random(4)
    clock = c.genesis.clock
    now = T0_MS + 500
    for height in range(1, 40):
        first = clock.first_open_slot(now // 1000)
        for _ in range(rng.randint(0, 15)):
            member = rng.randrange(30)
            key = c.members[member]
            roll = rng.random()
            if roll < 0.2:
                tx: Tx = sign_reading(key, c.genesis, slot=first - 2, net_wh=rng.randint(-900, 900))
            elif roll < 0.3:
                c.nonce[key.public_hex] += 1
                tx = sign_cancel(
                    key, c.genesis, slot=first + rng.randint(0, 1), nonce=c.nonce[key.public_hex]
                )
            else:
                side = Side.SELL if member % 2 else Side.BUY
                tx = c.order(
                    member, side, first + rng.randint(0, 1), (rng.randint(80_000, 300_000), 100)
                )
            proposer.submit(tx, now_ms=now)
            follower.submit(tx, now_ms=now)
        block = proposer.make_block(height, 0, now)
        assert follower.block_error(height, block, now) is None
        assert len(follower.state.memo.get(_WRITES, ())) <= 1  # the root took up every note
        for app in (proposer, follower):
            app.apply(height, block)
            assert app.state.digest() == dataclasses.replace(app.state, memo={}).digest()
        assert follower.state.digest() == proposer.state.digest()
        now += rng.randint(200_000, 500_000)
    assert follower.state.settled_slots > 0 and len(notes) > 40

"""Stop 23's ledger fast paths give exactly what the plain definitions give (issue 16).

Signing packs a transaction's body once and lays its bytes out from it; a key pair signs with
libsodium's ``crypto_sign`` on keys derived once. Each is compared here with the plain path it
replaces: the same bytes, ids, signatures and transactions.
"""

from __future__ import annotations

import random

import msgpack
import nacl.signing
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.core.crypto import KeyPair, signing_bytes
from gridnode.core.ledger import (
    SignedCancel,
    SignedModel,
    SignedOrder,
    SignedReading,
    decode_tx,
    sign_cancel,
    sign_model,
    sign_order,
    sign_reading,
    verify_signature,
)
from market.codec import order_to_wire
from market.orders import Order, Side, Step
from tests.ledger.helpers import T0_MS, Community

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _plain_raw(tag: str, body: list[object], signature: bytes) -> bytes:
    out: bytes = msgpack.packb([tag, 1, body, signature], use_bin_type=True)
    return out


def _plain_signature(key: KeyPair, domain: str, body: list[object]) -> bytes:
    message = signing_bytes(domain, msgpack.packb(body, use_bin_type=True))
    return nacl.signing.SigningKey(key.seed).sign(message).signature


def test_a_key_pair_signs_and_names_itself_as_pynacls_signing_key_does() -> None:
    rng = random.Random(3)
    for _ in range(20):
        key = KeyPair.from_rng(rng)
        plain = nacl.signing.SigningKey(key.seed)
        assert key.public_key == bytes(plain.verify_key)
        assert key.public_hex == bytes(plain.verify_key).hex()
        message = rng.randbytes(rng.randint(0, 300))
        signature = key.sign("reading:x", message)
        assert signature == plain.sign(signing_bytes("reading:x", message)).signature
        assert len(signature) == 64


@settings(max_examples=60, deadline=None)
@given(slot=INT64, net_wh=INT64, nonce=INT64, seed=st.binary(min_size=32, max_size=32))
def test_readings_and_cancels_signed_once_are_the_plain_transactions(
    slot: int, net_wh: int, nonce: int, seed: bytes
) -> None:
    c = Community()
    key = KeyPair(seed)
    h = key.public_hex
    reading = sign_reading(key, c.genesis, slot=slot, net_wh=net_wh)
    body: list[object] = ["gn.reading", 1, h, slot, net_wh]
    sig = _plain_signature(key, c.genesis.domain("reading"), body)
    assert reading.signature == sig
    assert reading.raw == _plain_raw("gn.tx.reading", body, sig)
    plain_reading = SignedReading(h, slot, net_wh, sig)
    assert reading == plain_reading
    assert (reading.raw, reading.id) == (plain_reading.raw, plain_reading.id)
    assert decode_tx(reading.raw) == reading

    cancel = sign_cancel(key, c.genesis, slot=slot, nonce=nonce)
    body = ["gn.cancel", 1, h, slot, nonce]
    sig = _plain_signature(key, c.genesis.domain("cancel"), body)
    plain_cancel = SignedCancel(h, slot, nonce, sig)
    assert cancel == plain_cancel
    assert cancel.raw == _plain_raw("gn.tx.cancel", body, sig) == plain_cancel.raw
    assert cancel.id == plain_cancel.id


@settings(max_examples=60, deadline=None)
@given(
    slot=st.integers(min_value=0, max_value=2**63 - 1),
    nonce=st.integers(min_value=0, max_value=2**63 - 1),
    steps=st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), min_size=1, max_size=12
    ),
    model=st.one_of(st.none(), st.binary(min_size=32, max_size=32).filter(any)),
    order_id=st.text(max_size=40),
)
def test_orders_signed_once_are_the_plain_transactions(
    slot: int, nonce: int, steps: list[tuple[int, int]], model: bytes | None, order_id: str
) -> None:
    c = Community()
    key = c.members[0]
    order = Order(
        order_id, key.public_hex, Side.SELL, slot, tuple(Step(p, e) for p, e in steps), nonce
    )
    tx = sign_order(key, c.genesis, order, model=model)
    body = order_to_wire(order) + ([] if model is None else [model])
    sig = _plain_signature(key, c.genesis.domain("order"), body)
    plain = SignedOrder(order, sig, model)
    assert tx == plain and (tx.raw, tx.id) == (plain.raw, plain.id)
    assert tx.raw == _plain_raw("gn.tx.order", body, sig)
    assert decode_tx(tx.raw) == tx and verify_signature(c.genesis, tx)


def test_a_model_commitment_signed_once_is_the_plain_transaction() -> None:
    c = Community()
    key = c.validators[1]
    values = {
        "round": 3,
        "model": bytes(range(32)),
        "previous": bytes(range(1, 33)),
        "contributors": 5,
        "validation": (1, 2, 3, 4, 5, 6, 7),
        "features": "profile-qr/2",
    }
    tx = sign_model(key, c.genesis, **values)  # type: ignore[arg-type]
    body: list[object] = [
        "gn.model", 1, key.public_hex, 3, values["model"], values["previous"], 5,
        [1, 2, 3, 4, 5, 6, 7], "profile-qr/2",
    ]  # fmt: skip
    sig = _plain_signature(key, c.genesis.domain("model"), body)
    plain = SignedModel(
        key.public_hex, 3, bytes(range(32)), bytes(range(1, 33)), 5, (1, 2, 3, 4, 5, 6, 7),
        "profile-qr/2", sig,
    )  # fmt: skip
    assert tx == plain and (tx.raw, tx.id) == (plain.raw, plain.id)
    assert tx.raw == _plain_raw("gn.tx.model", body, sig)
    assert decode_tx(tx.raw) == tx and verify_signature(c.genesis, tx)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),  # which earlier mapping to add to (forks: several children)
            st.lists(st.tuples(st.integers(-3, 60), st.none() | st.integers(0, 9)), max_size=4),
        ),
        max_size=25,
    )
)
def test_clearing_prices_read_as_the_dict_they_stand_for(
    steps: list[tuple[int, list[tuple[int, int | None]]]],
) -> None:
    """A :class:`ClearingPrices` is the ``dict`` of its items, whatever was appended to its log
    after it (its children, forks of them), whether the new prices come after its last slot
    (appended in place) or not (merged into a new log)."""
    import pickle

    from gridnode.core.ledger.prices import ClearingPrices

    held: list[tuple[ClearingPrices, dict[int, int | None]]] = [(ClearingPrices(), {})]
    for pick, entries in steps:
        base, plain = held[-1 - pick % len(held)]
        ordered = sorted(dict(entries).items())
        if pick % 2:  # mostly after the last slot, as the ledger adds them
            top = max(plain, default=-4)
            ordered = [(top + 1 + k, p) for k, (_, p) in enumerate(ordered)]
        held.append((base.plus(ordered), {**plain, **dict(ordered)}))
        for prices, expected in held:  # no holder ever sees its prices change
            assert dict(prices.items()) == expected and prices == expected
            assert list(prices) == sorted(expected) and len(prices) == len(expected)
            for slot in range(-4, 66):
                assert (slot in prices) == (slot in expected)
                assert prices.get(slot, "none") == expected.get(slot, "none")
    last, expected = held[-1]
    assert pickle.loads(pickle.dumps(last)) == expected
    assert ClearingPrices.of(expected) == last and (
        ClearingPrices.of(expected) != {1: 1} or not expected
    )


def test_a_year_of_prices_is_shared_along_the_chain_and_the_root_is_the_plain_one() -> None:
    """A block that clears a slot adds its price to the chain's log (no copy of the prices
    before it); the state root and the snapshot bytes are those of the plain definitions."""
    from dataclasses import replace

    from gridnode.core.ledger import decode_state, genesis_state
    from gridnode.core.ledger.prices import ClearingPrices
    from gridnode.core.ledger.stateroot import _prices, price_entry
    from gridnode.core.merkle import leaf_hash, tree_root

    c = Community()
    state = genesis_state(c.genesis)
    first = state.last_cleared_slot + 1
    state = replace(
        state, clearing_prices={s: 7 * s % 11 or None for s in range(first - 3000, first)}
    )
    now = T0_MS + 500
    for k in range(3):
        slot = c.genesis.clock.first_open_slot(now // 1000) + 1
        orders = [
            c.order(i, Side.SELL if i % 2 else Side.BUY, slot, (150_000 + k, 100 * (i + 1)))
            for i in range(6)
        ]
        before = state
        _, state = c.block(state, now, orders)
        now = (c.genesis.clock.start(slot) - c.genesis.gate_lead_seconds) * 1000 + 1000
        _, state = c.block(state, now, [])
        prices = state.clearing_prices
        assert (
            isinstance(prices, ClearingPrices)
            and slot in prices
            and slot not in before.clearing_prices
        )
        leaves = [leaf_hash(price_entry(s, p)) for s, p in sorted(prices.items())]
        fresh = replace(state, memo={})
        assert _prices(state) == _prices(fresh) == (len(leaves), tree_root(leaves))
        assert state.digest() == fresh.digest() and state.encode() == state._encode_plain()
        assert decode_state(state.encode(), c.genesis) == state
        assert before.encode() == before._encode_plain()  # an older state, after a newer one
        now = c.genesis.clock.start(slot + 1) * 1000 + 500


def test_prices_added_with_and_without_a_price_extend_the_tree_as_built_afresh() -> None:
    """A block may record slots without a price (``None``: nothing crossed) next to priced
    ones; the kept right edge of the prices tree takes every one of them, for the shared
    prices and for a plain ``dict`` alike."""
    from dataclasses import replace

    from gridnode.core.ledger import genesis_state
    from gridnode.core.ledger.prices import ClearingPrices
    from gridnode.core.ledger.stateroot import _prices, price_entry
    from gridnode.core.merkle import leaf_hash, tree_root

    base = genesis_state(Community().genesis)
    steps: list[dict[int, int | None]] = [{1: 5}, {2: None, 3: 7}, {4: None}, {5: 9, 6: None}]
    for shared in (True, False):
        memo: dict[object, object] = {}
        plain: dict[int, int | None] = {}
        prices: ClearingPrices | dict[int, int | None] = ClearingPrices() if shared else {}
        for added in steps:
            plain = {**plain, **added}
            prices = prices.plus(sorted(added.items())) if shared else dict(plain)  # type: ignore[union-attr]
            state = replace(base, clearing_prices=prices, memo=memo)
            leaves = [leaf_hash(price_entry(s, p)) for s, p in sorted(plain.items())]
            assert _prices(state) == (len(leaves), tree_root(leaves))


def test_settlement_reads_plain_int_readings_at_once_and_checks_any_other_as_before() -> None:
    """``settle`` takes a reading of exactly ``int`` at once; an ``int`` subclass gives the same
    settlement, a ``bool`` or a missing reading the same refusals as before."""
    from market.clearing import clear
    from market.errors import OrderReason, WireReason
    from market.settlement import Netting, Tariff, settle
    from tests.refusals import refused

    class Wh(int):
        pass

    tariff = Tariff(300_000, 80_000, 10_000)
    book = [
        Order("b1", "h1", Side.BUY, 1, (Step(200_000, 800),)),
        Order("b2", "h2", Side.BUY, 1, (Step(180_000, 300),)),
        Order("s1", "h3", Side.SELL, 1, (Step(100_000, 900),)),
    ]
    trades = clear(book, slot=1).trades
    plain = {"h1": -1000, "h2": -250, "h3": 700, "h4": 50}
    for netting in Netting:
        expected = settle(1, trades, plain, tariff, netting=netting)
        subclassed = {h: Wh(v) for h, v in plain.items()}
        assert settle(1, trades, subclassed, tariff, netting=netting) == expected
        with refused(WireReason.BAD_TYPE):
            settle(1, trades, {**plain, "h2": True}, tariff, netting=netting)
        with refused(OrderReason.MISSING_READING):
            settle(1, trades, {h: v for h, v in plain.items() if h != "h3"}, tariff)
